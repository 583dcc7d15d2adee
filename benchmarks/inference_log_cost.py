"""What the inference log costs the API's CPU per request, measured in process, with the log off, as a writer
thread inside the worker (INFERENCE_LOG_PROCESS=off) and as the log process ``python -m serving`` runs
(serving/inference_logd.py), the three alternating every fraction of a second: this shared VM's speed wanders by a
factor of two within seconds, which buries a 10 % effect in any measurement taken a minute apart.

    .venv/bin/python benchmarks/inference_log_cost.py [--log postgres|sqlite] [--rounds 30] [--tracking-uri URI]

The real app (``create_app`` over the registry's champion, authentication off on loopback) is called as an ASGI
app, as uvicorn calls it, with no network in between: ``POST /invocations`` of 1, 100 and 1000 rows. A slice is
a number of requests and then the log's work until every row of the slice is in the table; its cost is this
process's CPU time (``time.process_time``: the request path, the writer thread if any, and SQLite itself, which
runs inside the writer; not the main thread's polling of the table while it waits) plus the log process's CPU
time over the slice. Postgres's own work is the database
server's (on Render another machine's) and is not counted; ``inference_log_benchmark.py`` measures it. The slices
of a round run back to back, in rotating order; each round gives on/off ratios, and the median of the rounds is
reported with the range of the middle half. A CPU-bound instance's throughput is the inverse of its CPU per
request, so an on/off ratio of 1.11 or less is throughput within -10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serving_benchmark import payload, prepare_registry  # noqa: E402

PG_ADMIN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
# rows per request -> requests per slice: 0.3-0.6 s each, and at most 10,000 rows, under the backlog at which the
# writer would start spilling to its spool (INFERENCE_SPILL_ROWS, 20,000): the cost measured is the log keeping up.
SIZES = {1: 2000, 100: 100, 1000: 10}


def scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def slice_cpu(app: Any, body: bytes, n: int, drained: Any) -> float:
    """CPU seconds of this process for ``n`` requests, and until the log has written them (``drained``). The
    main thread's own CPU while it waits (polling the table) is the benchmark's, not the log's: left out; the
    writer thread's (thread mode) over the same time is counted."""
    base = scope("/invocations", body)
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    t0 = time.process_time()
    for _ in range(n):
        await app(dict(base), receive, send)
    waited = drained()
    cpu = time.process_time() - t0 - waited
    assert set(status) == {200}, set(status)
    return cpu


def cpu_of(pid: int) -> float:
    """CPU seconds another process (the log process) has run, to the nanosecond: the sum of its threads'
    schedstat (``/proc/PID/stat`` counts 10 ms ticks, as much as a whole slice of the log's work). Its threads
    live across slices (the worker's connection is flushed, not closed), so no thread's time leaves the sum."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that has just ended
    return total / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", choices=("postgres", "sqlite"), default="postgres")
    ap.add_argument("--rounds", type=int, default=30, help="rounds of off / writer thread / log process slices")
    ap.add_argument("--tracking-uri", default="", help="registry with diabetes-t2@champion (default: train one)")
    ap.add_argument("--out", default="", help="default: benchmarks/results/inference_log_cost_<log>.json")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="inference-log-cost-"))
    base, version, spec = prepare_registry(args.tracking_uri, tmp)
    os.environ.update({k: v for k, v in base.items() if k.startswith("MLFLOW_")})

    import psycopg2
    import sqlalchemy as sa
    from fastapi import FastAPI

    from serving import inference_log
    from serving.app import create_app
    from serving.inference_logd import Supervisor
    from serving.model_store import ModelStore
    from serving.settings import Settings

    # The request log's line per request is part of every mode's cost; written to /dev/null, not a terminal.
    logging.getLogger("serving.requests").handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115

    db = f"bench_cost_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    if args.log == "postgres":
        admin.cursor().execute(f'CREATE DATABASE "{db}"')
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
    else:
        url = f"sqlite:///{tmp / 'log.db'}"
    log_env = {"APP_DATABASE_URL": url, "INFERENCE_SPOOL_DIR": str(tmp / "spool"), "INFERENCE_LOG": "on"}
    os.environ.update(log_env)  # the log process reads the same settings
    supervisor = Supervisor()
    try:
        env = {**base, "HOST": "127.0.0.1", "MODEL_CACHE_DIR": str(tmp / "cache"), "RELOAD_INTERVAL_S": "0"}
        on = inference_log.Config.from_env(log_env)
        off = dataclasses.replace(on, enabled=False)
        inference_log._config = on
        settings = Settings.from_env(env)
        store = ModelStore(settings)
        app: FastAPI = create_app(settings, store, {"API_AUTH": "off"})  # migrates the log's tables
        store.load_initial()
        assert store.current is not None, store.problem
        supervisor.start()
        gc.collect()
        gc.freeze()  # as python -m serving does after loading: collections then skip MLflow's millions of objects
        counter = inference_db_engine(url)

        def logged() -> int:
            with counter.connect() as conn:
                return int(conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM inference_log")).scalar())

        def drained() -> float:
            """Until the slice's rows are all in the table; returns the main thread's CPU seconds spent polling."""
            if not inference_log._config.enabled:
                return 0.0
            w, s = inference_log._writer, inference_log._shipper
            if s is not None and os.environ.get(inference_log.SOCKET_ENV):
                s.flush()  # send what waits now (the connection, and its reader thread there, stay)
            elif w is not None:
                with w._cond:
                    w._cond.notify()  # write what waits now, not at the next INFERENCE_FLUSH_MS tick
            m0 = time.thread_time()
            deadline = time.monotonic() + 60
            while logged() < expected[0]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the log did not write the slice's rows within 60 s")
                time.sleep(0.02)
            return time.thread_time() - m0

        def run_slice(mode: str, body: bytes, rows: int, n: int) -> float:
            inference_log._config = off if mode == "off" else on
            if mode == "process":
                os.environ[inference_log.SOCKET_ENV] = supervisor.path
            else:
                os.environ.pop(inference_log.SOCKET_ENV, None)
            inference_log._socket = None  # read the variable again (it is read once per process)
            expected[0] = logged() + (0 if mode == "off" else rows * n)
            logd0 = cpu_of(supervisor.pid)
            own = asyncio.run(slice_cpu(app, body, n, drained))
            logd = cpu_of(supervisor.pid) - logd0
            parts[mode].append(logd / n * 1e6)
            return (own + logd) / n * 1e6

        expected = [0]
        modes = ("off", "thread", "process")
        parts: dict[str, list[float]] = {m: [] for m in modes}  # the log process's CPU per request, per slice
        results: dict[str, Any] = {}
        for rows, n in SIZES.items():
            body = payload(rows, spec)
            for mode in modes:  # warm-up: the writer and the connection started, caches filled
                run_slice(mode, body, rows, n)
            per: dict[str, list[float]] = {m: [] for m in modes}
            for m in modes:
                parts[m].clear()  # not the warm-up's
            for r in range(args.rounds):
                for mode in modes[r % 3 :] + modes[: r % 3]:
                    per[mode].append(run_slice(mode, body, rows, n))
            res: dict[str, Any] = {"requests_per_slice": n}
            for mode in modes:
                res[f"{mode}_us_per_request"] = round(statistics.median(per[mode]), 1)
            # of which the log process's CPU (the rest is this process: the request path, the thread if any)
            res["process_log_process_us_per_request"] = round(statistics.median(parts["process"]), 1)
            for mode in modes[1:]:
                ratios = sorted(b / a for a, b in zip(per["off"], per[mode], strict=True))
                q = len(ratios) // 4
                res[f"{mode}_over_off_median"] = round(statistics.median(ratios), 3)
                res[f"{mode}_over_off_middle_half"] = [round(ratios[q], 3), round(ratios[-q - 1], 3)]
                res[f"{mode}_log_us_per_row"] = round(
                    statistics.median((b - a) / rows for a, b in zip(per["off"], per[mode], strict=True)), 2
                )
            results[f"{rows}row"] = res
            print(f"{rows:>4}-row requests: {res}", flush=True)
        spooled = inference_log.ROWS.labels("spooled")._value.get()
        inference_log._config = on
        inference_log.shutdown()
        counter.dispose()
    finally:
        supervisor.stop()
        if args.log == "postgres":
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()
    doc = {"log": args.log, "model_version": version, "rounds": args.rounds, "results": results,
           "writer_thread_rows_spooled": int(spooled),  # 0: it kept up; no spill cost in its figures
           "load_average": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"inference_log_cost_{args.log}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"written {out}")
    return 0


def inference_db_engine(url: str) -> Any:
    from common.inference_db import make_engine

    return make_engine(url.replace("postgresql://", "postgresql+psycopg2://"))


if __name__ == "__main__":
    sys.exit(main())
