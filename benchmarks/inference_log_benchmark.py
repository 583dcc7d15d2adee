"""Benchmark: the serving API with the inference log on (Postgres, and SQLite) against the same API with
INFERENCE_LOG=off, in one run, on the same registered model.

    .venv/bin/python benchmarks/inference_log_benchmark.py [--tracking-uri URI] [--logs postgres,sqlite]
        [--seconds 3] [--sustain-seconds 20] [--rounds 3] [--skip-short] [--client wrk|python] [--pin 0:1]

The services run at once (2 workers each, gunicorn + uvicorn as deployed): the log off, the log in a fresh
database of the local Postgres (127.0.0.1:5432, or TEST_PG_DSN), the log in a throwaway SQLite file. Cells
alternate between them, the order rotating round after round, so background load on the machine hits all alike:

- short cells, each run as --short-rounds rounds (9) of one --seconds slice (2 s) per service back to back: 1-row
  requests one at a time (p50 latency), 1-row and 100-row requests from 8 keep-alive connections (throughput) —
  the issue's on/off targets are the 1-row cells. This machine's speed wanders by a factor of two from one
  minute to the next (a shared VM), so each ratio is the median of the rounds' paired ratios, with its range;
- the sustained cell (--sustain-seconds): 1000-row requests from 8 connections, the load under which the log
  used to fall behind. Memory of every process is sampled twice a second during it (peak PSS of the service,
  peak RSS and PSS of its largest worker).

The load generator is wrk (Debian's ``wrk``, C) when installed, else Python threads (``--client python``), which
take a core of their own from the two. Each cell counts CPU time per request: the service's processes while the load
runs plus its log process's during the drain (what the API instance pays for the log; the workers' CPU in the
drain answers this script's /metrics polls and is left out), the local Postgres server's over cell and drain (on
Render, another machine's) and the load generator's. ``--pin 0:1`` puts the services on CPU 0 and the load
generator, Postgres and this script on CPU 1, as if the database and the clients were other machines (root: it
moves the machine's Postgres, and puts it back at the end).

After each cell of a logging service, the next cell waits until that log has dealt with every row it was given
(in the table, or dropped and counted: ``/metrics``), so no writer runs during another service's cell; the time
this took is the log's drain time, and the rows it wrote per second over cell + drain are its sustained rate.
At the end every logging service's table must hold each scored and not dropped row exactly once. Reported:
medians of the rounds, on/off ratios, rows written per second, rows spooled and dropped, memory. Writes JSON
under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serving_benchmark import (  # noqa: E402
    cpu_seconds,
    free_port,
    log_counts,
    payload,
    postgres_pids,
    prepare_registry,
    run_cell,
    run_cell_wrk,
    stop,
    tree,
    wait_healthy,
)

PG_ADMIN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SHORT_CELLS = (("p50_1row_c1", 1, 1), ("tput_1row_c8", 1, 8), ("tput_100row_c8", 100, 8))
SUSTAIN_CELL = ("sustain_1000row_c8", 1000, 8)
DRAIN_TIMEOUT_S = 300


def start(name: str, env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**env, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", "MODEL_CACHE_DIR": str(tmp / name),
           "API_AUTH": "off"}  # fmt: skip
    log = (tmp / f"{name}.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "serving"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    wait_healthy(port, "/health", proc, t0, timeout=300)  # a loaded machine can take minutes to import MLflow
    return proc, port


def settled(c: dict[str, float]) -> bool:
    """Every scored row is in the table (written, or spooled and replayed) or was dropped and counted."""
    return c["written"] + c["replayed"] + c["dropped"] >= c["scored"]


def is_log_process(pid: int) -> bool:
    try:
        return b"inference_logd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def processes(pid: int) -> list[dict[str, float]]:
    out = []
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                kb = {line.split(":")[0]: int(line.split()[1]) for line in fh if line.split(":")[0] in ("Rss", "Pss")}
        except (OSError, ValueError, IndexError):
            continue
        out.append({"pid": p, "rss_mib": kb.get("Rss", 0) / 1024, "pss_mib": kb.get("Pss", 0) / 1024,
                    "logd": is_log_process(p)})  # fmt: skip
    return out


def memory(pid: int) -> dict[str, float]:
    """The service's total PSS, its largest worker's RSS and PSS (the master is the tree's root) and the
    inference log process's RSS (0 without one)."""
    ps = processes(pid)
    workers = [p for p in ps if p["pid"] != pid and not p["logd"]] or ps
    return {
        "total_pss_mib": round(sum(p["pss_mib"] for p in ps), 1),
        "worker_rss_mib": round(max(p["rss_mib"] for p in workers), 1),
        "worker_pss_mib": round(max(p["pss_mib"] for p in workers), 1),
        "log_process_rss_mib": round(sum(p["rss_mib"] for p in ps if p["logd"]), 1),
    }


class Sampler:
    """Peak memory of one service while a cell runs (twice a second)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = {"total_pss_mib": 0.0, "worker_rss_mib": 0.0, "worker_pss_mib": 0.0, "log_process_rss_mib": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for k, v in memory(self.pid).items():
                self.peak[k] = max(self.peak[k], v)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Load:
    """How cells are driven: ``wrk`` (C) or Python threads, and where each side runs (``--pin``)."""

    client: str = "wrk"
    client_cpus: str = ""  # taskset CPU list for the load generator (and Postgres), "" = anywhere

    def run(self, port: int, body: bytes, conc: int, seconds: float) -> dict[str, Any]:
        if self.client == "wrk":
            return run_cell_wrk(port, body, conc, seconds, cpus=self.client_cpus)
        return run_cell(port, body, conc, seconds)


def run_logged_cell(mode: str, port: int, pid: int, body: bytes, conc: int, seconds: float, sample: bool,
                    load: Load) -> dict:  # fmt: skip
    """One cell, then (logging services) the log's drain. CPU time per request: the service's processes while
    the load ran plus the log process's during the drain (its work after the last request is still this cell's;
    the workers' CPU during the drain is not counted: it answers this script's /metrics polls, a cost of the
    benchmark, not of the log); the local Postgres server's over both (on Render another machine's); and the
    load generator's."""
    before = log_counts(port)
    procs, pg = tree(pid), postgres_pids()
    logd = [p for p in procs if is_log_process(p)]
    cpu0, pg0, logd0 = cpu_seconds(procs), cpu_seconds(pg), cpu_seconds(logd)
    with Sampler(pid) if sample else _Null() as sampler:
        res = load.run(port, body, conc, seconds)
        cpu_load, logd_load = cpu_seconds(procs), cpu_seconds(logd)
        if mode != "off":  # the log's drain is part of the cell: its memory peak may come after the last request
            t0 = time.perf_counter()
            while not settled(after := log_counts(port)) and time.perf_counter() - t0 < DRAIN_TIMEOUT_S:
                time.sleep(0.1)
            res["log_drain_s"] = round(time.perf_counter() - t0, 2)
            delta = {k: after[k] - before[k] for k in after}
            res.update({f"rows_{k}": int(v) for k, v in delta.items()})
            res["rows_in_table_per_s"] = round(
                (delta["written"] + delta["replayed"]) / (res["wall_s"] + res["log_drain_s"])
            )
            res["settled"] = settled(after)
    n = max(1, res.get("requests", 0))
    res["api_cpu_us_per_req"] = round((cpu_load - cpu0 + cpu_seconds(logd) - logd_load) / n * 1e6, 1)
    res["log_process_cpu_us_per_req"] = round((cpu_seconds(logd) - logd0) / n * 1e6, 1)  # of which
    res["db_cpu_us_per_req"] = round((cpu_seconds(pg) - pg0) / n * 1e6, 1)
    if "client_cpu_s" in res:
        res["client_cpu_us_per_req"] = round(res["client_cpu_s"] / n * 1e6, 1)
    if sample:
        res["peak_memory"] = sampler.peak
    res["memory_after"] = memory(pid)
    return res


def pin(pids: list[int], cpus: str) -> None:
    """Every thread of these processes onto ``cpus`` (children forked later inherit it)."""
    for p in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(p)], capture_output=True, check=False)


def unpinned(pids: list[int], cpus: str) -> list[int]:
    """Threads of these processes allowed on a CPU outside ``cpus`` (e.g. "0", "0-1", "0,2")."""
    allowed: set[int] = set()
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        allowed.update(range(int(lo), int(hi or lo) + 1))
    out = []
    for p in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{p}/task")]
        except OSError:
            continue
        for t in tids:
            try:
                if not os.sched_getaffinity(t) <= allowed:
                    out.append(t)
            except OSError:
                continue
    return out


class _Null:
    peak: dict = {}

    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def table_counts(url: str) -> tuple[int, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.connect() as conn:
            q = "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT request_id, row FROM inference_log) d) " \
                "FROM inference_log"  # fmt: skip
            n, distinct = conn.execute(sa.text(q)).one()
    finally:
        engine.dispose()
    return int(n), int(distinct)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracking-uri", default="", help="registry with diabetes-t2@champion (default: train one)")
    ap.add_argument("--logs", default="postgres,sqlite", help="logging services beside the log-off one")
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each short cell's slice")
    ap.add_argument("--sustain-seconds", type=float, default=20.0, help="duration of the sustained 1000-row cell")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the sustained cell")
    ap.add_argument("--short-rounds", type=int, default=9, help="rounds of each short cell (paired ratios)")
    ap.add_argument("--skip-short", action="store_true", help="only the sustained cell")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="for the logging services")
    ap.add_argument("--client", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python",
                    help="load generator (default: wrk when installed)")  # fmt: skip
    ap.add_argument("--pin", default="", metavar="API_CPUS:OTHER_CPUS",
                    help="e.g. 0:1 — the services on CPU 0; the load generator, Postgres and this script on CPU 1 "
                         "(the database and clients as other machines, as on Render); restored at the end")  # fmt: skip
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference_log.json"))
    args = ap.parse_args(argv)
    logs = [x for x in args.logs.split(",") if x]
    api_cpus, _, other_cpus = args.pin.partition(":")
    driver = Load(args.client, other_cpus)
    if args.pin:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still puts Postgres back (finally)
        pin([os.getpid()], other_cpus)
        pin(postgres_pids(), other_cpus)

    import psycopg2

    tmp = Path(tempfile.mkdtemp(prefix="inference-log-bench-"))
    base, _, spec = prepare_registry(args.tracking_uri, tmp)
    bodies = {n: payload(n, spec) for n in (1, 100, 1000)}
    cells = ([] if args.skip_short else list(SHORT_CELLS)) + ([SUSTAIN_CELL] if args.sustain_seconds > 0 else [])

    db = f"bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    if "postgres" in logs:
        admin.cursor().execute(f'CREATE DATABASE "{db}"')
    urls = {"postgres": PG_ADMIN.rsplit("/", 1)[0] + f"/{db}", "sqlite": f"sqlite:///{tmp / 'log.db'}"}
    procs: dict[str, tuple[subprocess.Popen, int]] = {}
    load = [os.getloadavg()]
    try:
        procs["off"] = start("off", {**base, "INFERENCE_LOG": "off"}, tmp)
        for name in logs:
            env = {**base, "APP_DATABASE_URL": urls[name], "INFERENCE_SPOOL_DIR": str(tmp / f"spool-{name}")}
            env.update(kv.split("=", 1) for kv in args.env)
            procs[name] = start(name, env, tmp)
        modes = list(procs)
        if args.pin:
            for proc, _ in procs.values():
                pin(tree(proc.pid), api_cpus)
        for mode in modes:  # warm-up: every worker has served requests
            driver.run(procs[mode][1], bodies[1], 8, 1)
        idle = {m: memory(procs[m][0].pid) for m in modes}
        results: dict[str, dict[str, list[dict[str, Any]]]] = {m: {c[0]: [] for c in cells} for m in modes}
        pin_escapes: list[dict[str, Any]] = []  # threads still off the services' CPUs after pinning (--pin)
        # Short cells back to back, in rounds of one slice per service (the order rotating): a slow spell of the
        # machine (a shared VM's CPU comes and goes) hits the services of one round alike, and each round gives a
        # paired on/off ratio. Then the sustained rounds.
        plan = [
            (cell, rows, conc, args.seconds, args.short_rounds) for cell, rows, conc in cells if cell != SUSTAIN_CELL[0]
        ]
        plan += [(*SUSTAIN_CELL, args.sustain_seconds, args.rounds)] if SUSTAIN_CELL in cells else []
        for i, (cell, rows, conc, secs, rounds) in enumerate(plan):
            for r in range(rounds):
                k = (r + i) % len(modes)
                for mode in modes[k:] + modes[:k]:
                    proc, port = procs[mode]
                    if args.pin:  # again before every cell: a process started since (a restarted log process)
                        pin(tree(proc.pid), api_cpus)
                        escaped = unpinned(tree(proc.pid), api_cpus)
                        if escaped:
                            pin_escapes.append({"mode": mode, "cell": cell, "round": r + 1, "threads": len(escaped)})
                    sustained = cell == SUSTAIN_CELL[0]
                    res = run_logged_cell(mode, port, proc.pid, bodies[rows], conc, secs, sustained, driver)
                    results[mode][cell].append(res)
                    print(f"round {r + 1} {mode:8} {cell:18} {res}", flush=True)
            load.append(os.getloadavg())
        totals = {m: log_counts(procs[m][1]) for m in logs}
        for proc, _ in procs.values():
            stop(proc)  # graceful: a logging service flushes what it holds
        tables = {m: table_counts(urls[m]) for m in logs}
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                stop(proc)
        if "postgres" in logs:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()
        if args.pin:
            pin(postgres_pids(), f"0-{os.cpu_count() - 1}")  # the machine's Postgres as it was

    def med(mode: str, cell: str, key: str) -> float:
        return statistics.median(x[key] for x in results[mode][cell])

    def peak(mode: str, key: str) -> float:
        return max(x["peak_memory"][key] for x in results[mode][SUSTAIN_CELL[0]])

    summary: dict[str, Any] = {}
    if not args.skip_short:
        summary["p50_1row_ms"] = {m: med(m, "p50_1row_c1", "p50_ms") for m in modes}
        summary["req_s_1row_c8"] = {m: med(m, "tput_1row_c8", "req_s") for m in modes}
        summary["req_s_100row_c8"] = {m: med(m, "tput_100row_c8", "req_s") for m in modes}
        for cell, _, _ in SHORT_CELLS[1:]:
            summary[f"api_cpu_us_per_req_{cell[5:]}"] = {m: med(m, cell, "api_cpu_us_per_req") for m in modes}
            summary[f"db_cpu_us_per_req_{cell[5:]}"] = {m: med(m, cell, "db_cpu_us_per_req") for m in modes}
            summary[f"log_process_cpu_us_per_req_{cell[5:]}"] = {
                m: med(m, cell, "log_process_cpu_us_per_req") for m in modes
            }
    if args.sustain_seconds > 0:
        s = SUSTAIN_CELL[0]
        summary["req_s_1000row_c8_sustained"] = {m: med(m, s, "req_s") for m in modes}
        summary["api_cpu_us_per_req_1000row_c8_sustained"] = {m: med(m, s, "api_cpu_us_per_req") for m in modes}
        summary["db_cpu_us_per_req_1000row_c8_sustained"] = {m: med(m, s, "db_cpu_us_per_req") for m in modes}
        summary["rows_in_table_per_s_sustained"] = {m: med(m, s, "rows_in_table_per_s") for m in logs}
        summary["log_drain_s_sustained"] = {m: med(m, s, "log_drain_s") for m in logs}
        summary["rows_spooled_sustained"] = {m: sum(x["rows_spooled"] for x in results[m][s]) for m in logs}
        summary["rows_dropped_sustained"] = {m: sum(x["rows_dropped"] for x in results[m][s]) for m in logs}
        summary["rows_scored_sustained"] = {m: sum(x["rows_scored"] for x in results[m][s]) for m in logs}
        summary["peak_worker_rss_mib"] = {m: peak(m, "worker_rss_mib") for m in modes}
        summary["peak_worker_pss_mib"] = {m: peak(m, "worker_pss_mib") for m in modes}
        summary["peak_total_pss_mib"] = {m: peak(m, "total_pss_mib") for m in modes}
        summary["peak_log_process_rss_mib"] = {m: peak(m, "log_process_rss_mib") for m in modes}

    def paired(mode: str, cell: str, key: str) -> dict[str, float]:
        """Median, lowest and highest of the rounds' on/off ratios (each round's slices ran back to back)."""
        r = [x[key] / o[key] for x, o in zip(results[mode][cell], results["off"][cell], strict=True) if o[key]]
        return {"median": round(statistics.median(r), 3), "min": round(min(r), 3), "max": round(max(r), 3)}

    ratios: dict[str, Any] = {}
    if not args.skip_short and "off" in modes:
        for label, cell, key in (("p50_1row_ms", "p50_1row_c1", "p50_ms"), ("req_s_1row_c8", "tput_1row_c8", "req_s"),
                                 ("req_s_100row_c8", "tput_100row_c8", "req_s"),
                                 ("api_cpu_us_per_req_1row_c8", "tput_1row_c8", "api_cpu_us_per_req"),
                                 ("api_cpu_us_per_req_100row_c8", "tput_100row_c8", "api_cpu_us_per_req")):  # fmt: skip
            for m in logs:
                ratios[f"{label}_{m}_over_off"] = paired(m, cell, key)
    if args.sustain_seconds > 0 and "off" in modes:
        for key in ("req_s_1000row_c8_sustained", "api_cpu_us_per_req_1000row_c8_sustained"):
            for m in logs:
                ratios[f"{key}_{m}_over_off"] = round(summary[key][m] / summary[key]["off"], 3)
    errors = sum(x["errors"] for m in results.values() for c in m.values() for x in c)
    exact = {m: tables[m][0] == tables[m][1] == int(totals[m]["scored"] - totals[m]["dropped"]) for m in logs}
    doc = {
        "rounds": args.rounds,
        "short_rounds": args.short_rounds,
        "seconds_per_short_cell": args.seconds,
        "sustain_seconds": args.sustain_seconds,
        "workers": 2,
        "client": args.client,
        "pin": args.pin or None,
        "pin_escapes": pin_escapes,
        "log_env": args.env,
        "summary": summary,
        "ratios": ratios,
        "errors": errors,
        "memory_idle": idle,
        "log_totals": totals,
        "rows_in_table_and_distinct": tables,
        "every_row_exactly_once": exact,
        "load_average_per_round": [[round(x, 2) for x in la] for la in load],
        "cells": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print("\n| figure | " + " | ".join(modes) + " |\n|---|" + "---|" * len(modes))
    for key, v in summary.items():
        print(f"| {key} | " + " | ".join(f"{v[m]:,.2f}" if m in v else "" for m in modes) + " |")
    print(f"ratios: {ratios}")
    print(f"tables (rows, distinct): {tables}; exactly once: {exact}; errors: {errors}; load {load[-1]}")
    print(f"written {out}")
    return 0 if all(exact.values()) and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
