"""Benchmark: the monitoring page's SQL on a large inference log (issue: "fast on 1 million logged rows").

    .venv/bin/python benchmarks/monitoring_page_benchmark.py [--rows 1000000] [--repeats 3] [--tracking-uri URI]

Fills a fresh database of the local Postgres (127.0.0.1:5432, or TEST_PG_DSN) with --rows logged predictions of
one model version over 30 days (generated inside Postgres) plus 1 % confirmed outcomes, then runs each panel's
query exactly as the page does (ui/monitoring_data.py: versions, volume per day, latency percentiles, risk mix,
drift against the model's reference distributions, outcomes) --repeats times over the last 30 days, timing each.
The first repeat is what a clinician's first visit costs (the page caches for a minute after it); the database's
own cache is warm after the fill, as it is on a server that has been logging. Writes JSON under
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serving_benchmark import MODEL, prepare_registry  # noqa: E402

PG_ADMIN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DAYS = 30


def fill(engine: Any, rows: int, version: str, spec: list[dict[str, Any]]) -> float:
    """``rows`` predictions spread over the last DAYS days, features uniform in their ranges (10 % missing
    where optional); one outcome per 100 predictions. Seconds it took."""
    import sqlalchemy as sa

    pairs = []
    for j, f in enumerate(spec):
        if f.get("type") == "categorical":
            cats = ", ".join("'" + str(c).replace("'", "''") + "'" for c in f["categories"])
            value = f"(ARRAY[{cats}])[1 + (g + {j}) % {len(f['categories'])}]"
        else:
            lo, hi = float(f["min"]), float(f["max"])
            value = f"round(({lo} + random() * {hi - lo})::numeric, 2)"
        if f.get("optional"):
            value = f"CASE WHEN (g + {j}) % 10 = 0 THEN NULL ELSE {value} END"
        pairs.append(f"'{f['name']}', {value}")
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT setseed(0.5)"))
        conn.execute(
            sa.text(
                f"""
                INSERT INTO inference_log (request_id, row, ts, model_name, model_version, run_id, route, caller,
                    features, probability, label, risk_level, latency_ms, source)
                SELECT md5(g::text), 0, now() - (g % {DAYS}) * interval '1 day' - (g % 86399) * interval '1 second',
                    :name, :version, repeat('a', 32), '/invocations', 'bench', jsonb_build_object({", ".join(pairs)}),
                    (g % 1000) / 1000.0, CASE WHEN g % 1000 >= 500 THEN 1 ELSE 0 END,
                    CASE WHEN g % 1000 < 150 THEN 'low' WHEN g % 1000 < 500 THEN 'moderate' ELSE 'high' END,
                    0.2 + (g % 97) / 10.0, 'api'
                FROM generate_series(1, :rows) AS g
                """
            ),
            {"rows": rows, "name": MODEL, "version": version},
        )
        conn.execute(
            sa.text(
                """
                INSERT INTO inference_outcome (request_id, row, diabetes, test, test_date, recorded_at, caller)
                SELECT md5(g::text), 0, (g % 1000) >= 400, 'hba1c', current_date, now(), 'bench'
                FROM generate_series(1, :rows, 100) AS g
                """
            ),
            {"rows": rows},
        )
        conn.execute(sa.text("ANALYZE inference_log; ANALYZE inference_outcome"))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tracking-uri", default="", help="registry with diabetes-t2@champion (default: train one)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "monitoring_page.json"))
    args = ap.parse_args(argv)

    import psycopg2
    import sqlalchemy as sa

    from common.inference_db import make_engine, migrate
    from ui import monitoring_data as data
    from ui import registry

    tmp = Path(tempfile.mkdtemp(prefix="monitoring-bench-"))
    base, version, spec = prepare_registry(args.tracking_uri, tmp)
    version = str(version)  # inference_log.model_version is text
    doc = registry.model_document(base["MLFLOW_TRACKING_URI"], MODEL, version)
    reference = (doc or {}).get("reference_distributions")
    if not reference:
        print("error: the champion has no reference distributions", file=sys.stderr)
        return 2

    db = f"bench_mon_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{db}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://") + f"/{db}"
    timings: dict[str, list[float]] = {}
    try:
        migrate(url)
        writer = sa.create_engine(url)
        fill_s = fill(writer, args.rows, version, spec)
        writer.dispose()
        print(f"filled {args.rows:,} rows in {fill_s:.1f} s", flush=True)
        engine = make_engine(url, read_only=True)  # as the page connects
        end = datetime.now(UTC).date()
        start = end - timedelta(days=DAYS)
        key = (MODEL, version)
        for r in range(args.repeats):
            with engine.connect() as conn:
                steps: dict[str, float] = {}

                def timed(name: str, fn: Any, *a: Any, steps: dict[str, float] = steps) -> Any:
                    t0 = time.perf_counter()
                    out = fn(*a)
                    steps[name] = time.perf_counter() - t0
                    return out

                timed("versions", data.versions, conn)
                where = data.window(key, start, end)
                daily = timed("volume_per_day", data.daily, conn, where)
                n = int(daily["predictions"].sum())
                timed("latency_percentiles", data.latency_percentiles, conn, where)
                timed("risk_mix", data.risk_mix, conn, where)
                timed("drift", data.drift_counts, conn, key, start, end, reference, n)
                timed("outcomes", data.outcomes, conn, where)
                steps["total"] = sum(steps.values())
            for k, v in steps.items():
                timings.setdefault(k, []).append(round(v, 3))
            print(f"repeat {r + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()), flush=True)
            assert n == args.rows, (n, args.rows)
        engine.dispose()
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()
    doc_out = {
        "rows": args.rows,
        "days": DAYS,
        "fill_s": round(fill_s, 1),
        "first_s": {k: v[0] for k, v in timings.items()},
        "median_s": {k: statistics.median(v) for k, v in timings.items()},
        "repeats": timings,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc_out, indent=1))
    print("\n| panel | first (s) | median (s) |\n|---|---:|---:|")
    for k in timings:
        print(f"| {k} | {doc_out['first_s'][k]:.2f} | {doc_out['median_s'][k]:.2f} |")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
