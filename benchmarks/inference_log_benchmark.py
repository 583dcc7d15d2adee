"""Benchmark: the serving API with the inference log on (Postgres) against the same API with INFERENCE_LOG=off,
in one run, on the same registered model.

    .venv/bin/python benchmarks/inference_log_benchmark.py [--tracking-uri URI] [--seconds 3] [--rounds 3]

Both services run at once (2 workers each, gunicorn + uvicorn as deployed); cells alternate between them, round
after round, so background load on the machine hits both alike. Per cell: 1-row requests one at a time (p50
latency) and 1-row and 100-row requests from 8 keep-alive connections (throughput). Reported: the median of the
rounds, the on/off ratios, and that every request of the logging service is in the table exactly once. Writes
JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serving_benchmark import (  # noqa: E402
    free_port,
    memory_mib,
    payload,
    prepare_registry,
    run_cell,
    stop,
    wait_healthy,
)

PG_ADMIN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
CELLS = (("p50_1row_c1", 1, 1), ("tput_1row_c8", 1, 8), ("tput_100row_c8", 100, 8))


def start(name: str, env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**env, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", "MODEL_CACHE_DIR": str(tmp / name)}
    log = (tmp / f"{name}.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "serving"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_healthy(port, "/health", proc, t0, timeout=300)  # a loaded machine can take minutes to import MLflow
    return proc, port


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracking-uri", default="", help="registry with diabetes-t2@champion (default: train one)")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each cell")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference_log.json"))
    args = ap.parse_args(argv)

    import psycopg2
    import sqlalchemy as sa

    tmp = Path(tempfile.mkdtemp(prefix="inference-log-bench-"))
    base, _, spec = prepare_registry(args.tracking_uri, tmp)
    bodies = {n: payload(n, spec) for n in (1, 100)}

    db = f"bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{db}"')
    log_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
    procs = {}
    try:
        procs["off"] = start("off", {**base, "INFERENCE_LOG": "off"}, tmp)
        procs["on"] = start("on", {**base, "APP_DATABASE_URL": log_url, "INFERENCE_SPOOL_DIR": str(tmp / "spool")}, tmp)
        results: dict[str, dict[str, list[dict[str, Any]]]] = {m: {c[0]: [] for c in CELLS} for m in procs}
        sent_rows = 0
        for r in range(args.rounds):
            for cell, rows, conc in CELLS:
                for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    res = run_cell(procs[mode][1], bodies[rows], conc, args.seconds)
                    results[mode][cell].append(res)
                    if mode == "on":
                        sent_rows += (res["requests"] - res["errors"]) * rows
                    print(f"round {r + 1} {mode:3} {cell:15} {res}", flush=True)
        memory = {mode: memory_mib(proc.pid) for mode, (proc, _) in procs.items()}
        for proc, _ in procs.values():
            stop(proc)  # graceful: the logging service flushes its last batch
        engine = sa.create_engine(log_url.replace("postgresql://", "postgresql+psycopg2://"))
        with engine.connect() as conn:
            count = "SELECT count(*), count(DISTINCT (request_id, row)) FROM inference_log"
            logged = conn.execute(sa.text(count)).one()
        engine.dispose()
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                stop(proc)
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()

    def med(mode: str, cell: str, key: str) -> float:
        return statistics.median(x[key] for x in results[mode][cell])

    summary = {
        "p50_1row_ms": {m: med(m, "p50_1row_c1", "p50_ms") for m in procs},
        "req_s_1row_c8": {m: med(m, "tput_1row_c8", "req_s") for m in procs},
        "req_s_100row_c8": {m: med(m, "tput_100row_c8", "req_s") for m in procs},
    }
    ratios = {
        "p50_1row_on_over_off": summary["p50_1row_ms"]["on"] / summary["p50_1row_ms"]["off"],
        "tput_1row_on_over_off": summary["req_s_1row_c8"]["on"] / summary["req_s_1row_c8"]["off"],
        "tput_100row_on_over_off": summary["req_s_100row_c8"]["on"] / summary["req_s_100row_c8"]["off"],
    }
    errors = sum(x["errors"] for m in results.values() for c in m.values() for x in c)
    doc = {
        "rounds": args.rounds,
        "seconds_per_cell": args.seconds,
        "workers": 2,
        "summary": summary,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "errors": errors,
        "memory_after_load": memory,
        "rows_sent_to_logging_service": sent_rows,
        "rows_logged": logged[0],
        "distinct_rows_logged": logged[1],
        "load_average": os.getloadavg(),
        "cells": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print("\n| figure | log off | log on | on/off |\n|---|---|---|---|")
    print(f"| 1-row p50 (ms), 1 client | {summary['p50_1row_ms']['off']:.2f} | {summary['p50_1row_ms']['on']:.2f} "
          f"| {ratios['p50_1row_on_over_off']:.3f} |")  # fmt: skip
    for key, label in (("req_s_1row_c8", "1-row req/s, 8 clients"), ("req_s_100row_c8", "100-row req/s, 8 clients")):
        r = summary[key]["on"] / summary[key]["off"]
        print(f"| {label} | {summary[key]['off']:.0f} | {summary[key]['on']:.0f} | {r:.3f} |")
    print(f"| PSS MiB after load (2 workers) | {memory['off']['pss_mib']} | {memory['on']['pss_mib']} | |")
    print(f"rows sent to the logging service: {sent_rows}; in the table: {logged[0]} ({logged[1]} distinct); "
          f"errors: {errors}; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"written {out}")
    return 0 if logged[0] == logged[1] == sent_rows and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
