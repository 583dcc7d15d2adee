"""Batch scoring: the local engine vs Spark local[2] vs `mlflow models predict` vs posting 10k-row chunks to the API.

Generates 1 M and 10 M rows for the registered model (10 % of optional values missing), runs each peer as its own
process tree and samples the tree's RSS every 0.1 s. Rows/s are end to end (process start to exit, model load
included) and, for the two engines, also the scoring phase alone as the job reports it. The slow peers run at
1 M rows only unless asked (--peers-10m). Outputs are compared with the local engine's.

    python -m benchmarks.batch_benchmark [--tracking-uri URI] [--sizes 1000000,10000000] [--peers-10m]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.serving_benchmark import free_port, stop, tree, wait_healthy  # noqa: E402

MODEL = "diabetes-t2"
CHUNK = 10_000
TARGET = {"rows": 10_000_000, "peak_rss_mib": 1024, "rows_per_s": 500_000}
# Plausible values for the bundled features; any other feature is drawn uniformly within its range.
TYPICAL = {"glucosa": (120, 30), "presion_diastolica": (72, 12), "pliegue_triceps": (29, 10), "imc": (32, 7),
           "edad": (38, 12), "embarazos": (3, 3), "pedigri_diabetes": (0.5, 0.3)}  # fmt: skip


def generate(spec: list[dict[str, Any]], n: int, path: Path, seed: int = 1) -> None:
    """n valid rows (every peer must accept them: the pyfunc refuses a whole request with one bad row)."""
    rng = np.random.default_rng(seed)
    fields = [pa.field("id", pa.int64())] + [
        pa.field(f["name"], pa.string() if f["type"] == "categorical" else pa.float64()) for f in spec
    ]
    with pq.ParquetWriter(path, pa.schema(fields)) as writer:
        for start in range(0, n, 1_000_000):
            m = min(1_000_000, n - start)
            cols: dict[str, Any] = {"id": np.arange(start, start + m)}
            for f in spec:
                if f["type"] == "categorical":
                    values = rng.choice(f["categories"], m).astype(object)
                else:
                    mu, sd = TYPICAL.get(f["name"], ((f["min"] + f["max"]) / 2, (f["max"] - f["min"]) / 6))
                    values = np.clip(rng.normal(mu, sd, m), f["min"], f["max"])
                    values = np.round(values) if f.get("integer") else np.round(values, 3)
                if f.get("optional"):
                    values = np.where(rng.random(m) < 0.1, None if f["type"] == "categorical" else np.nan, values)
                cols[f["name"]] = values
            writer.write_table(pa.table(cols, schema=writer.schema), row_group_size=131_072)


def rss_mib(pid: int) -> float:
    """RSS of a process tree from /proc/<pid>/status: cheap, unlike smaps_rollup, whose page-table walk every 0.1 s
    would stall a JVM with a large heap."""
    kib = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                kib += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return kib / 1024


class Sampler:
    """Peak RSS of a process tree, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.running = pid, 0.0, True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.1)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return self.peak


def timed(name: str, cmd: list[str], env: dict[str, str], rows: int, log: Path, timeout: int = 3600) -> dict[str, Any]:
    print(f"--- {name}: {rows:,} rows", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    sampler = Sampler(proc.pid)
    try:
        code = proc.wait(timeout)
    finally:
        peak = sampler.stop()
        stop(proc)
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if code != 0:
        raise RuntimeError(f"{name} exited with {code}: {text[-2000:]}")
    out = {"peer": name, "rows": rows, "wall_s": round(wall, 1), "rows_per_s": round(rows / wall),
           "peak_rss_mib": round(peak)}  # fmt: skip
    m = re.search(r"rows in ([0-9.]+)s \(([0-9,]+) rows/s\)", text)
    if m:  # the engines report their scoring phase (after start-up and model load)
        out["scoring_s"], out["scoring_rows_per_s"] = float(m.group(1)), int(m.group(2).replace(",", ""))
    print(f"    {out}", flush=True)
    return out


def api_peer(env: dict[str, str], source: Path, rows: int, work: Path) -> dict[str, Any]:
    """`python -m serving` (2 workers); 10k-row JSON chunks posted by 2 client threads."""
    import requests

    print(f"--- api (10k-row chunks): {rows:,} rows", flush=True)
    port = free_port()
    env = {**env, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", "MODEL_NAME": MODEL,
           "MODEL_CACHE_DIR": str(work / "api-cache"), "REGISTRY_TIMEOUT_S": "120",
           "API_AUTH": "off"}  # loopback only: authentication is measured in the serving benchmark  # fmt: skip
    with (work / "api.log").open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "serving"], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_healthy(port, "/health", proc, time.perf_counter(), timeout=300)
        sampler = Sampler(proc.pid)
        session = requests.Session()
        url = f"http://127.0.0.1:{port}/invocations"

        def post(batch: pa.RecordBatch) -> int:
            body = batch.to_pandas().drop(columns="id").to_json(orient="split", index=False)
            r = session.post(url, data=f'{{"dataframe_split": {body}}}', headers={"Content-Type": "application/json"},
                             timeout=120)  # fmt: skip
            r.raise_for_status()
            return batch.num_rows

        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            done = sum(pool.map(post, pq.ParquetFile(source).iter_batches(batch_size=CHUNK)))
        wall = time.perf_counter() - t0
        peak = sampler.stop()
    finally:
        stop(proc)
    assert done == rows
    out = {"peer": "api (10k-row JSON chunks, 2 workers)", "rows": rows, "wall_s": round(wall, 1),
           "rows_per_s": round(rows / wall), "peak_rss_mib": round(peak),
           "note": "server process tree only; time from first post to last answer (server already up)"}  # fmt: skip
    print(f"    {out}", flush=True)
    return out


def max_diff(local: Path, other: list[Path], column: str = "probability") -> float:
    """Largest |difference| of the other peer's probabilities from the local engine's, in row order."""
    a = pq.read_table(local, columns=[column]).column(0).to_numpy(zero_copy_only=False)
    if other[0].suffix == ".json":
        b = np.array([p["probability"] for p in json.loads(other[0].read_text())["predictions"]])
    else:
        b = np.concatenate([pq.read_table(p, columns=[column]).column(0).to_numpy(zero_copy_only=False) for p in other])
    assert len(a) == len(b), (len(a), len(b))
    return float(np.max(np.abs(a - b)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracking-uri", default="", help="registry with diabetes-t2@champion (default: train one)")
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--peers-10m", action="store_true", help="also run Spark, mlflow and the API at 10 M rows")
    ap.add_argument("--skip", default="", help="comma-separated peers to leave out: spark,mlflow,api")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch.json"))
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MLFLOW_RUN_ID", "PORT")}
    env.update({"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})
    env["MLFLOW_TRACKING_URI"] = args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
    env["MLFLOW_ARTIFACT_ROOT"] = (work / "artifacts").as_uri()
    if not args.tracking_uri:
        print("training a model into a throwaway registry…", flush=True)
        subprocess.run([sys.executable, "-m", "pipeline.main"], cwd=ROOT, env=env, check=True, capture_output=True)

    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    version = mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion").version
    uri = f"models:/{MODEL}/{version}"
    risk = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    spec = risk.spec["features"]
    families = sorted({t["kind"] for t in risk.terms})

    results: list[dict[str, Any]] = []
    checks: dict[str, float] = {}
    batch = [sys.executable, "-m", "pipeline.batch", "--model-uri", uri, "--id-columns", "id"]
    for n in [int(s) for s in args.sizes.split(",")]:
        src = work / f"in-{n}.parquet"
        generate(spec, n, src)
        local_out = work / f"local-{n}.parquet"
        results.append(timed("local engine", [*batch, "--input", str(src), "--output", str(local_out)], env, n,
                             work / f"local-{n}.log"))  # fmt: skip
        peers = n <= 1_000_000 or args.peers_10m
        if n <= 1_000_000:
            csv_src = work / f"in-{n}.csv"
            pacsv.write_csv(pq.read_table(src), csv_src)
            cmd = [*batch, "--input", str(csv_src), "--output", str(work / f"local-csv-{n}.parquet")]
            results.append(timed("local engine (CSV input)", cmd, env, n, work / f"local-csv-{n}.log"))
        if peers and "spark" not in skip:
            spark_out = work / f"spark-{n}"
            cmd = [*batch, "--engine", "spark", "--input", str(src), "--output", str(spark_out)]
            spark_env = {**env, "SPARK_MASTER": "local[2]"}
            results.append(timed("spark local[2]", cmd, spark_env, n, work / f"spark-{n}.log"))
            checks[f"spark_vs_local_{n}"] = max_diff(local_out, sorted(spark_out.glob("part-*.parquet")))
        if peers and "mlflow" not in skip:
            csv_in = work / f"mlflow-in-{n}.csv"
            # pandas writes 4.0 as "4.0": MLflow's schema check refuses a column it reads back as integers.
            pq.read_table(src).drop(["id"]).to_pandas().to_csv(csv_in, index=False)
            mlflow_out = work / f"mlflow-{n}.json"
            cmd = [sys.executable, "-m", "mlflow", "models", "predict", "-m", uri, "-i", str(csv_in), "-t", "csv",
                   "-o", str(mlflow_out), "--env-manager", "local"]  # fmt: skip
            results.append(timed("mlflow models predict", cmd, env, n, work / f"mlflow-{n}.log"))
            checks[f"mlflow_vs_local_{n}"] = max_diff(local_out, [mlflow_out])
        if peers and "api" not in skip:
            results.append(api_peer(env, src, n, work))
        for p in work.glob(f"*-{n}*"):  # 10 M rows of inputs and outputs would fill the disk
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    local10 = next((r for r in results if r["peer"] == "local engine" and r["rows"] == TARGET["rows"]), None)
    doc = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },  # fmt: skip
        "model": {"uri": uri, "features": len(spec), "term_kinds": families},
        "target": TARGET,
        "target_met": None
        if local10 is None
        else {
            "peak_rss": local10["peak_rss_mib"] < TARGET["peak_rss_mib"],
            "rows_per_s_end_to_end": local10["rows_per_s"] >= TARGET["rows_per_s"],
            "rows_per_s_scoring": local10.get("scoring_rows_per_s", 0) >= TARGET["rows_per_s"],
        },  # fmt: skip
        "max_abs_probability_difference_vs_local": checks,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(markdown(doc))
    return 0


def markdown(doc: dict[str, Any]) -> str:
    lines = ["| peer | rows | wall s | rows/s (end to end) | rows/s (scoring) | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in doc["results"]:
        scoring = f"{r['scoring_rows_per_s']:,}" if "scoring_rows_per_s" in r else "–"
        lines.append(f"| {r['peer']} | {r['rows']:,} | {r['wall_s']} | {r['rows_per_s']:,} | {scoring} | "
                     f"{r['peak_rss_mib']:,} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
