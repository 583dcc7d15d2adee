"""Benchmark: this serving API against `mlflow models serve`, on the same registered model, in one run.

    .venv/bin/python benchmarks/serving_benchmark.py [--tracking-uri URI] [--seconds 3] [--out PATH]
    .venv/bin/python benchmarks/serving_benchmark.py --only-auth [--rounds 7]   # just the auth comparison

Without --tracking-uri it trains a model into a throwaway SQLite registry first. For each service
(`mlflow models serve -w 1|2 --env-manager local`, `python -m serving` with 1|2 workers) it measures time
from start to the first healthy answer, then req/s, p50 and p99 for 1-, 100- and 1000-row dataframe_split
requests at concurrency 1 and 8 on keep-alive connections (threads, each with its own http.client
connection; loopback only; each cell bounded in time and count), then total RSS and PSS of the service's
process tree from /proc/<pid>/smaps_rollup. Writes JSON and prints a markdown table with ratios.

Authentication cost: two 1-worker APIs side by side, one with API_AUTH=off and one with authentication on (an API
key from the key database, rate limits counted with a limit never reached). The 1-row cells at concurrency 1 and 8
alternate between the two for --rounds rounds, so both see the same machine load; the medians of the rounds' p50s
are compared (target: +10 % at most for 1 row, concurrency 1). Written to benchmarks/results/serving_auth.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = "diabetes-t2"
ROWS = (1, 100, 1000)
CONCURRENCY = (1, 8)
MAX_REQUESTS = 20000  # per cell, on top of the time bound


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def memory_mib(pid: int) -> dict[str, float]:
    rss = pss = 0
    pids = tree(pid)
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return {"rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1), "processes": len(pids)}


def payload(n: int, spec: list[dict[str, Any]], seed: int = 7) -> bytes:
    rnd = random.Random(seed)
    cols = [f["name"] for f in spec]
    data = []
    for _ in range(n):
        row = []
        for f in spec:
            lo, hi = f["min"], f["max"]
            v = rnd.uniform(lo, min(hi, lo + (hi - lo) / 2))
            row.append(round(v) if f.get("integer") else round(v, 3))
        data.append(row)
    return json.dumps({"dataframe_split": {"columns": cols, "data": data}}).encode()


def run_cell(
    port: int, body: bytes, concurrency: int, seconds: float, extra_headers: dict[str, str] | None = None
) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop_at = time.perf_counter() + seconds
    budget = MAX_REQUESTS // concurrency
    headers = {"Content-Type": "application/json", **(extra_headers or {})}

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        lat = latencies[i]
        for _ in range(budget):
            if time.perf_counter() > stop_at:
                break
            t = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, headers)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            lat.append(time.perf_counter() - t)
            if not ok:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(x for part in latencies for x in part)
    n = len(lat)
    return {
        "requests": n,
        "errors": sum(errors),
        "req_s": round(n / wall, 1) if wall else 0.0,
        "p50_ms": round(lat[n // 2] * 1000, 3) if n else None,
        "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1000, 3) if n else None,
    }


def wait_healthy(port: int, path: str, proc: subprocess.Popen, t0: float, timeout: float = 90) -> float:
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("service not healthy in time")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group this script started
    except ProcessLookupError:
        pass
    proc.wait(5)


def bench_service(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    port: int,
    health: str,
    bodies: dict[int, bytes],
    seconds: float,
    log: Path,
) -> dict[str, Any]:
    print(f"--- {name}", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        healthy = wait_healthy(port, health, proc, t0)
        time.sleep(1.5)  # every worker has booted: idle memory of the whole service
        idle = memory_mib(proc.pid)
        run_cell(port, bodies[1], 8, 0.5)  # warm-up: every worker has served requests
        cells = {}
        for rows in ROWS:
            for conc in CONCURRENCY:
                cell = run_cell(port, bodies[rows], conc, seconds)
                cells[f"{rows}x{conc}"] = cell
                print(f"  rows={rows:<5} c={conc}  {cell}", flush=True)
        mem = memory_mib(proc.pid)
    finally:
        stop(proc)
    return {"name": name, "healthy_s": round(healthy, 2), "memory_idle": idle, "memory_after": mem, "cells": cells}


def start_api(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    wait_healthy(int(env["PORT"]), "/health", proc, time.perf_counter())
    return proc, int(env["PORT"])


def auth_comparison(base_env: dict[str, str], bodies: dict[int, bytes], seconds: float, rounds: int, tmp: Path) -> dict:
    """Same machine, same moment: API_AUTH=off against authentication on, alternating cell by cell."""
    import statistics

    keys_db = f"sqlite:///{tmp / 'keys.db'}"
    made = subprocess.run(
        [sys.executable, "-m", "serving.keys", "create", "--name", "bench", "--scopes", "predict"],
        cwd=ROOT, env={**base_env, "APP_DATABASE_URL": keys_db}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    key = made.stdout.strip().splitlines()[-1]
    common = {**base_env, "HOST": "127.0.0.1", "WEB_CONCURRENCY": "1", "MODEL_CACHE_DIR": str(tmp / "cache-auth")}
    modes = {
        "off": ({"API_AUTH": "off"}, None),
        "on": (
            # Limits are counted on every request, at a level this benchmark never reaches.
            {"API_AUTH": "on", "APP_DATABASE_URL": keys_db, "RATE_LIMIT_PER_KEY": "100000000/minute;1000000000/day"},
            {"Authorization": f"Bearer {key}"},
        ),
    }
    procs, ports = {}, {}
    try:
        for mode, (extra, _) in modes.items():
            env = {**common, **extra, "PORT": str(free_port())}
            procs[mode], ports[mode] = start_api(env, tmp / f"api-auth-{mode}.log")
        for mode, (_, headers) in modes.items():  # warm-up, and the credential works
            warm = run_cell(ports[mode], bodies[1], 1, 0.5, headers)
            assert warm["errors"] == 0, f"auth {mode}: {warm['errors']} errors in warm-up"
        cells: dict[str, dict[str, list]] = {f"1x{c}": {"off": [], "on": []} for c in CONCURRENCY}
        for r in range(rounds):
            for conc in CONCURRENCY:
                order = ("off", "on") if r % 2 == 0 else ("on", "off")
                for mode in order:
                    cell = run_cell(ports[mode], bodies[1], conc, seconds, modes[mode][1])
                    cells[f"1x{conc}"][mode].append(cell)
                    print(f"  auth={mode:<3} round={r} rows=1 c={conc}  {cell}", flush=True)
    finally:
        for proc in procs.values():
            stop(proc)
    summary = {}
    for name, by_mode in cells.items():
        med = {m: statistics.median(c["p50_ms"] for c in by_mode[m]) for m in by_mode}
        req = {m: statistics.median(c["req_s"] for c in by_mode[m]) for m in by_mode}
        summary[name] = {
            "p50_ms_median_off": med["off"],
            "p50_ms_median_on": med["on"],
            "p50_increase_pct": round((med["on"] / med["off"] - 1) * 100, 1),
            "req_s_median_off": req["off"],
            "req_s_median_on": req["on"],
            "errors_on": sum(c["errors"] for c in by_mode["on"]),
            "rounds": by_mode,
        }
    return {
        "rounds": rounds,
        "seconds_per_cell": seconds,
        "cells": summary,
        "target_1row_c1_p50_increase_le_10pct": summary["1x1"]["p50_increase_pct"] <= 10.0,
    }


def auth_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| rows | conc | p50 ms auth off | p50 ms auth on | p50 change | req/s off | req/s on |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, c in result["cells"].items():
        rows, conc = key.split("x")
        lines.append(
            f"| {rows} | {conc} | {c['p50_ms_median_off']} | {c['p50_ms_median_on']} | {c['p50_increase_pct']:+} % |"
            f" {c['req_s_median_off']} | {c['req_s_median_on']} |"
        )
    met = "yes" if result["target_1row_c1_p50_increase_le_10pct"] else "NO"
    lines += ["", f"medians of {result['rounds']} alternating rounds; 1-row c=1 p50 within +10 %: {met}"]
    return "\n".join(lines)


def prepare_registry(tracking_uri: str, tmp: Path) -> tuple[dict[str, str], str, list[dict[str, Any]]]:
    """A child environment pointing at ``tracking_uri`` (or at a model trained into ``tmp`` when empty), the
    champion's version and its feature spec."""
    base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MLFLOW_TRACKING_HOSTPORT", "PORT")}
    drop = ("PROMETHEUS_", "MLFLOW_SCORING", "INFERENCE_", "APP_DATABASE")
    base_env = {k: v for k, v in base_env.items() if not k.startswith(drop)}
    base_env["PYTHONPATH"] = str(ROOT)
    base_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base_env.get('PATH', '')}"
    uri = tracking_uri or f"sqlite:///{tmp / 'mlflow.db'}"
    base_env["MLFLOW_TRACKING_URI"] = uri
    if not tracking_uri:
        print("training a model into a throwaway registry…", flush=True)
        env = {**base_env, "MLFLOW_ARTIFACT_ROOT": (tmp / "artifacts").as_uri()}
        subprocess.run([sys.executable, "-m", "pipeline.main"], cwd=ROOT, env=env, check=True, capture_output=True)

    import mlflow

    mlflow.set_tracking_uri(uri)
    version = mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion").version
    spec = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").unwrap_python_model().spec["features"]
    return base_env, version, spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracking-uri", default="", help="registry with diabetes-t2@champion (default: train one)")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each cell")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving.json"))
    ap.add_argument("--only-auth", action="store_true", help="only the authentication on/off comparison")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds of the auth comparison")
    ap.add_argument("--auth-out", default=str(ROOT / "benchmarks" / "results" / "serving_auth.json"))
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    base_env, version, spec = prepare_registry(args.tracking_uri, tmp)
    bodies = {n: payload(n, spec) for n in ROWS}

    print("--- authentication off vs on (1 worker each, alternating)", flush=True)
    auth = auth_comparison(base_env, bodies, args.seconds, args.rounds, tmp)
    auth_out = Path(args.auth_out)
    auth_out.parent.mkdir(parents=True, exist_ok=True)
    auth_out.write_text(json.dumps({"model": f"{MODEL} v{version}", **auth}, indent=1), encoding="utf-8")
    print(auth_markdown(auth))
    print(f"\nwritten {auth_out}")
    if args.only_auth:
        return 0

    services = []
    for workers in (1, 2):
        port = free_port()
        cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion"]
        cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]
        services.append(
            bench_service(
                f"mlflow-w{workers}", cmd, base_env, port, "/ping", bodies, args.seconds, tmp / f"mlflow-w{workers}.log"
            )
        )
        port = free_port()
        env = {
            **base_env,
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            "HOST": "127.0.0.1",
            "API_AUTH": "off",  # the protocol against MLflow's; authentication's own cost is measured above
            "MODEL_CACHE_DIR": str(tmp / f"cache-w{workers}"),
        }  # fresh cache: start-up includes the download
        services.append(
            bench_service(
                f"api-w{workers}",
                [sys.executable, "-m", "serving"],
                env,
                port,
                "/health",
                bodies,
                args.seconds,
                tmp / f"api-w{workers}.log",
            )
        )

    by = {s["name"]: s for s in services}
    ratios = {}
    for w in (1, 2):
        api, base = by[f"api-w{w}"], by[f"mlflow-w{w}"]
        ratios[f"w{w}"] = {
            k: round(api["cells"][k]["req_s"] / base["cells"][k]["req_s"], 2) if base["cells"][k]["req_s"] else None
            for k in api["cells"]
        }
    api1, api2 = by["api-w1"], by["api-w2"]
    targets = {
        "1row_c1_ratio_ge_2.5x": ratios["w1"]["1x1"] >= 2.5,
        "1row_c1_p50_le_2ms": api1["cells"]["1x1"]["p50_ms"] <= 2.0,
        "1000row_ratio_ge_2x": all(ratios[f"w{w}"][f"1000x{c}"] >= 2 for w in (1, 2) for c in CONCURRENCY),
        "2workers_c8_ratio_ge_4x": ratios["w2"]["1x8"] >= 4,
        "2workers_pss_le_300mb": api2["memory_after"]["pss_mib"] * 1.048576 <= 300,
        "healthy_le_3s": max(api1["healthy_s"], api2["healthy_s"]) <= 3.0,
        "never_slower": all(r >= 1 for w in ratios.values() for r in w.values() if r is not None),
        "no_errors": all(
            c["errors"] == 0 for s in services if s["name"].startswith("api") for c in s["cells"].values()
        ),
    }
    result = {
        "model": f"{MODEL} v{version}",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "seconds_per_cell": args.seconds,
        "services": services,
        "ratios_req_s_api_over_mlflow": ratios,
        "targets_met": targets,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(markdown(result))
    print(f"\nwritten {out}")
    return 0


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| service | rows | conc | req/s | p50 ms | p99 ms | errors | × mlflow (same workers) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["services"]:
        w = s["name"][-2:]
        for key, c in s["cells"].items():
            rows, conc = key.split("x")
            ratio = result["ratios_req_s_api_over_mlflow"][w][key] if s["name"].startswith("api") else ""
            lines.append(
                f"| {s['name']} | {rows} | {conc} | {c['req_s']} | {c['p50_ms']} | {c['p99_ms']} | {c['errors']} |"
                f" {ratio} |"
            )
    lines += [
        "",
        "| service | healthy after (s) | RSS MiB (idle / after load) | PSS MiB (idle / after load) | processes |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in result["services"]:
        i, a = s["memory_idle"], s["memory_after"]
        lines.append(
            f"| {s['name']} | {s['healthy_s']} | {i['rss_mib']} / {a['rss_mib']} | {i['pss_mib']} / {a['pss_mib']} |"
            f" {a['processes']} |"
        )
    lines += ["", "| target | met |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else 'NO'} |" for k, v in result["targets_met"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
