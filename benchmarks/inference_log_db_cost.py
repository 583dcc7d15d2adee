"""Benchmark: the database's own CPU per row of ``inference_log`` on the local Postgres, by kind of request id.

    .venv/bin/python benchmarks/inference_log_db_cost.py [--rows 200000] [--preload 800000] [--repeats 2]

Each case gets a fresh database migrated by the project's Alembic history (the real table and its indexes),
is preloaded with ``--preload`` rows (a log that has been running a while), then takes ``--rows`` more in
500-row ``COPY`` batches — the log process's statement, its text made by serving/inference_rows.py from 1-row
requests. What is measured is the CPU time of every Postgres process (the backend, and the WAL writer,
checkpointer and autovacuum it wakes) during the load and 3 s after it, per row, and the COPY backend's own
(the insertion itself, index entries included; the other processes' share wanders with when autovacuum runs).
Cases: request ids as random UUIDs (uuid4, what the API minted before) and as UUIDv7 (serving/deps.py
``new_request_id``: time first), in alternating order ``--repeats`` times. Writes
benchmarks/results/inference_log_db_cost.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg2  # noqa: E402

from benchmarks.serving_benchmark import postgres_pids  # noqa: E402
from common import inference_db  # noqa: E402
from serving.deps import new_request_id  # noqa: E402
from serving.inference_rows import _COPY_SQL, Batch, Item  # noqa: E402

PG_ADMIN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 500
CLK = os.sysconf("SC_CLK_TCK")
IDS = {"uuid4": lambda: uuid.uuid4().hex, "uuid7": new_request_id}
MODEL = SimpleNamespace(name="diabetes-t2", version="3", run_id="a" * 32, categories={},
                        names=["embarazos", "glucosa", "presion_diastolica", "pliegue_triceps", "imc",
                               "pedigri_diabetes", "edad"])  # fmt: skip


def cpu_s(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / CLK


def copy_texts(rows: int, make_id: object, rng: np.random.Generator) -> list[bytes]:
    """COPY text of ``rows`` 1-row requests, in batches, as the log process makes it."""
    out = []
    for _ in range(0, rows, BATCH):
        items = [Item(time.time_ns() // 1000, make_id(), "/invocations", "api", "local", 0.5, MODEL,
                      rng.normal(size=(1, 7)).round(3), np.array([0.3]), np.array([0]),
                      np.array(["bajo"], dtype=object)) for _ in range(BATCH)]  # fmt: skip
        out.append(Batch([(it, 0, 1) for it in items]).copy_text().encode())
    return out


def case(kind: str, rows: int, preload: int, seed: int) -> dict[str, float]:
    db = f"bench_dbcost_{kind}_{uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {db}")
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
    rng = np.random.default_rng(seed)
    try:
        inference_db.migrate(url.replace("postgresql://", "postgresql+psycopg2://", 1))
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cur = conn.cursor()
        sql = _COPY_SQL.format("inference_log")
        for text in copy_texts(preload, IDS[kind], rng):
            cur.copy_expert(sql, io.BytesIO(text))
        cur.execute("CHECKPOINT")
        cur.execute("SELECT pg_backend_pid()")
        (backend,) = cur.fetchone()
        texts = copy_texts(rows, IDS[kind], rng)
        before = {p: cpu_s(p) for p in postgres_pids()}
        t0 = time.perf_counter()
        for text in texts:
            cur.copy_expert(sql, io.BytesIO(text))
        elapsed = time.perf_counter() - t0
        backend_s = cpu_s(backend) - before.get(backend, 0.0)
        time.sleep(3)  # what the load woke (WAL writer, autovacuum) finishes its share
        after = {p: cpu_s(p) for p in postgres_pids()}
        conn.close()
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()
    spent = sum(after.get(p, 0.0) - before.get(p, 0.0) for p in after)
    return {"postgres_cpu_us_per_row": round(spent / rows * 1e6, 2),
            "backend_cpu_us_per_row": round(backend_s / rows * 1e6, 2), "rows_per_s": round(rows / elapsed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--preload", type=int, default=800_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference_log_db_cost.json"))
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in IDS}
    for r in range(args.repeats):
        for kind in list(IDS) if r % 2 == 0 else list(IDS)[::-1]:
            got = case(kind, args.rows, args.preload, seed=r)
            runs[kind].append(got)
            print(f"round {r + 1}: {kind}: {got['postgres_cpu_us_per_row']} µs of Postgres CPU per row (its COPY "
                  f"backend {got['backend_cpu_us_per_row']}), {got['rows_per_s']} rows/s", flush=True)  # fmt: skip
    med = {k: statistics.median(x["postgres_cpu_us_per_row"] for x in v) for k, v in runs.items()}
    med_backend = {k: statistics.median(x["backend_cpu_us_per_row"] for x in v) for k, v in runs.items()}
    doc = {"rows": args.rows, "preload": args.preload, "batch_rows": BATCH, "load_average": os.getloadavg(),
           "runs": runs, "median_postgres_cpu_us_per_row": med, "median_backend_cpu_us_per_row": med_backend,
           "uuid7_over_uuid4": round(med["uuid7"] / med["uuid4"], 2),
           "uuid7_over_uuid4_backend": round(med_backend["uuid7"] / med_backend["uuid4"], 2)}  # fmt: skip
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k] for k in ("median_postgres_cpu_us_per_row", "median_backend_cpu_us_per_row",
                                          "uuid7_over_uuid4", "uuid7_over_uuid4_backend")}))  # fmt: skip


if __name__ == "__main__":
    main()
