"""Benchmark: this serving API against its peers and its ceiling, on the same registered model, in one run.

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements-bench.txt   # once: MLServer
    .venv/bin/python benchmarks/serving_benchmark.py [--tracking-uri URI] [--seconds 3] [--peer-rounds 3]
        [--skip-auth] [--out PATH]
    .venv/bin/python benchmarks/serving_benchmark.py --only-auth [--rounds 7]   # just the auth comparison

Without --tracking-uri it trains a model into a throwaway SQLite registry first. For 1 and then 2 workers, these
run side by side: ``mlflow models serve -w N --env-manager local``; MLServer 1.7.1 with mlserver-mlflow (from
.venv-bench: its pins conflict with ours, see requirements-bench.txt), asked both in the V2 inference protocol
(``/v2/models/<name>/infer``, one FP64 tensor per column) and in MLflow's protocol (its ``/invocations``);
``python -m serving`` as deployed (inference log on, to a throwaway SQLite unless --inference-db) and with
INFERENCE_LOG=off; and the ceiling, a bare ASGI app on the same gunicorn + uvicorn stack
(benchmarks/bare_asgi.py). Each service is started alone and timed to its first healthy answer, then its idle
memory is read; every endpoint must give the same probabilities for the same 100 patients. Then 1-, 100- and
1000-row requests (the same made-up patients in each protocol) at concurrency 1 and 8 on keep-alive
connections (threads, each with its own http.client connection; loopback only; each cell bounded in time and
count) run on every endpoint in turn, the order rotating, for --peer-rounds rounds (medians reported), with the
load average recorded per round. After each cell of the API with its log on, the next waits until the log has
written every row (its writer would otherwise use the CPU during another endpoint's cell). Finally total RSS and
PSS of each service's process tree from /proc/<pid>/smaps_rollup. Writes JSON and prints markdown tables.

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
import shutil
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
# MLServer cannot share .venv's pins (requirements-bench.txt says why): it runs from its own virtualenv.
BENCH_VENV = ROOT / ".venv-bench"
MLSERVER = BENCH_VENV / "bin" / "mlserver"
BENCH_SETUP = "python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements-bench.txt"


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


def patients(n: int, spec: list[dict[str, Any]], seed: int = 7) -> tuple[list[str], list[list[float]]]:
    """n made-up patients inside the features' ranges: column names and rows."""
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
    return cols, data


def payload(n: int, spec: list[dict[str, Any]], seed: int = 7) -> bytes:
    """MLflow's protocol (``/invocations``): the patients as ``dataframe_split``."""
    cols, data = patients(n, spec, seed)
    return json.dumps({"dataframe_split": {"columns": cols, "data": data}}).encode()


def v2_payload(n: int, spec: list[dict[str, Any]], seed: int = 7) -> bytes:
    """The same patients in the V2 inference protocol (MLServer's ``/v2/models/<name>/infer``): one FP64 tensor
    per column, shape [n, 1] (what mlserver-mlflow declares from the model's signature)."""
    cols, data = patients(n, spec, seed)
    inputs = [
        {"name": c, "datatype": "FP64", "shape": [n, 1], "data": [float(row[j]) for row in data]}
        for j, c in enumerate(cols)
    ]
    return json.dumps({"inputs": inputs}).encode()


def run_cell(
    port: int,
    body: bytes,
    concurrency: int,
    seconds: float,
    extra_headers: dict[str, str] | None = None,
    path: str = "/invocations",
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
                conn.request("POST", path, body, headers)
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
        "wall_s": round(wall, 3),
        "req_s": round(n / wall, 1) if wall else 0.0,
        "p50_ms": round(lat[n // 2] * 1000, 3) if n else None,
        "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1000, 3) if n else None,
    }


WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""


def run_cell_wrk(
    port: int, body: bytes, concurrency: int, seconds: float, path: str = "/invocations", cpus: str = ""
) -> dict[str, Any]:
    """The same cell as ``run_cell`` driven by wrk (Debian's ``wrk``: C, one thread, keep-alive connections), so
    the load generator takes far less of the machine's CPU than Python threads do. Its own CPU time is reported
    (``client_cpu_s``). ``cpus``: a CPU list for ``taskset`` (the load generator kept off the API's cores)."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        (Path(tmp) / "body").write_bytes(body)
        (Path(tmp) / "post.lua").write_text(WRK_SCRIPT)
        cmd = ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s", "--latency",
               "--timeout", "30s", "-s", str(Path(tmp) / "post.lua"), f"http://127.0.0.1:{port}{path}"]  # fmt: skip
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        env = {**os.environ, "BENCH_BODY": str(Path(tmp) / "body")}
        before = os.times()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        after = os.times()
    return {**parse_wrk(out), "client_cpu_s": round(after.children_user + after.children_system
                                                     - before.children_user - before.children_system, 3)}  # fmt: skip


def parse_wrk(out: str) -> dict[str, Any]:
    """requests, errors (non-2xx, socket errors), wall time, req/s, p50 and p99 from wrk's --latency report."""

    def ms(text: str) -> float:
        units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        num = text.rstrip("musn")
        return float(num) * units[text[len(num) :]]

    res: dict[str, Any] = {"errors": 0}
    for line in out.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "50%":
            res["p50_ms"] = round(ms(words[1]), 3)
        elif words[0] == "99%":
            res["p99_ms"] = round(ms(words[1]), 3)
        elif len(words) > 3 and words[1] == "requests" and words[2] == "in":
            res["requests"] = int(words[0])
            res["wall_s"] = round(ms(words[3].rstrip(",")) / 1000, 3)
        elif words[0] == "Requests/sec:":
            res["req_s"] = float(words[1])
        elif line.startswith("  Non-2xx or 3xx responses:"):
            res["errors"] += int(words[-1])
        elif words[0] == "Socket" and words[1] == "errors:":
            res["errors"] += sum(int(x.rstrip(",")) for x in words[3::2])
    return res


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes have used so far (/proc/<pid>/stat; exited ones count nothing)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def postgres_pids() -> list[int]:
    """The local Postgres server's processes (postmaster, backends, WAL writer, checkpointer…)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() in ("postgres", "postmaster"):
                        out.append(int(entry))
            except OSError:
                continue
    return out


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


def start_service(
    name: str, cmd: list[str], env: dict[str, str], port: int, health: str, log: Path, cwd: Path = ROOT
) -> dict[str, Any]:
    """Start one service and wait for its first healthy answer; then its idle memory (every worker booted)."""
    print(f"--- start {name}", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        healthy = wait_healthy(port, health, proc, t0)
        time.sleep(1.5)  # every worker has booted: idle memory of the whole service
        idle = memory_mib(proc.pid)
    except BaseException:
        stop(proc)
        raise
    print(f"  healthy after {healthy:.2f} s, idle {idle}", flush=True)
    return {"name": name, "proc": proc, "port": port, "healthy_s": round(healthy, 2), "memory_idle": idle}


def mlserver_setup(workers: int, port: int, base_env: dict[str, str], tmp: Path) -> tuple[list[str], dict, Path]:
    """MLServer's command, environment and working folder: a model repository with one model-settings.json
    (mlserver_mlflow.MLflowRuntime on the registry's champion, downloaded at start like the others) and a
    settings.json with debug off (no access log, as this API). MLServer has one HTTP process; for one worker
    the model runs inside it (``parallel_workers: 0``: ~1.5x the req/s of its default, one inference process
    behind the HTTP one, at ~0.55x the memory, in a probe on this machine), for two in two inference processes
    behind it (``parallel_workers: 2``, its only way to use a second core)."""
    home = tmp / f"mlserver-w{workers}"
    (home / MODEL).mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),  # it always serves gRPC and its metrics too; loopback ports of their own
        "metrics_port": free_port(),
        "parallel_workers": 0 if workers == 1 else workers,
    }
    model = {
        "name": MODEL,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": f"models:/{MODEL}@champion"},
    }
    (home / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    (home / MODEL / "model-settings.json").write_text(json.dumps(model), encoding="utf-8")
    env = {k: v for k, v in base_env.items() if k != "PYTHONPATH"}  # nothing of this project is needed there
    env["PATH"] = f"{MLSERVER.parent}{os.pathsep}{env.get('PATH', '')}"
    return [str(MLSERVER), "start", str(home)], env, home


def probabilities(raw: bytes) -> list[float]:
    """The probabilities of a response: MLflow's protocol or V2's."""
    doc = json.loads(raw)
    if "outputs" in doc:
        return next(o["data"] for o in doc["outputs"] if o["name"] == "probability")
    preds = doc["predictions"]
    return [p["probability"] for p in preds] if isinstance(preds, list) else preds["probability"]


def same_answers(endpoints: list[dict[str, Any]], rows: int = 100) -> dict[str, float]:
    """Every model-serving endpoint scores the same ``rows`` patients to the same probabilities (the largest
    difference from this API's, per endpoint): the comparison is of the same work."""
    answers = {}
    for e in endpoints:
        if e["endpoint"] == "ceiling":
            continue
        conn = http.client.HTTPConnection("127.0.0.1", e["service"]["port"], timeout=30)
        conn.request("POST", e["path"], e["bodies"][rows], {"Content-Type": "application/json"})
        r = conn.getresponse()
        raw = r.read()
        conn.close()
        if r.status != 200:
            raise RuntimeError(f"{e['endpoint']}: HTTP {r.status} for {rows} rows")
        answers[e["endpoint"]] = probabilities(raw)
    ref = answers["api"]
    diffs = {}
    for name, probs in answers.items():
        if len(probs) != len(ref):
            raise RuntimeError(f"{name}: {len(probs)} answers for {len(ref)} rows")
        diffs[name] = max(abs(a - b) for a, b in zip(probs, ref, strict=True))
        if diffs[name] > 1e-9:
            raise RuntimeError(f"{name}: probabilities differ from this API's by up to {diffs[name]}")
    return diffs


def log_counts(port: int) -> dict[str, float]:
    """From the API's /metrics: rows scored, and rows its inference log has written, spooled or dropped."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    counts = {"scored": 0.0, "written": 0.0, "spooled": 0.0, "replayed": 0.0, "dropped": 0.0}
    for line in text.splitlines():
        if line.startswith("serving_predictions_total{"):
            counts["scored"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("inference_log_rows_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            if outcome in counts:
                counts[outcome] += float(line.rsplit(" ", 1)[1])
    return counts


def wait_log_drained(port: int, dropped_before: float, timeout: float = 120) -> dict[str, float]:
    """Wait until the API's inference log has dealt with every scored row (its writer would otherwise go on
    using the CPU during the next endpoint's cell); how long that took after the cell, and rows it dropped."""
    t0 = time.perf_counter()
    while True:
        c = log_counts(port)
        # in the table (written, or spooled and replayed: the writer spills to disk when it falls behind) or lost
        done = c["written"] + c["replayed"] + c["dropped"] >= c["scored"]
        if done or time.perf_counter() - t0 > timeout:
            break
        time.sleep(0.05)
    return {
        "log_drain_s": round(time.perf_counter() - t0, 3),
        "log_rows_dropped": c["dropped"] - dropped_before,
        "log_drained": done,  # False: still behind after ``timeout`` seconds
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell over its rounds: medians of req/s, p50 and p99; requests and errors summed."""
    import statistics

    out = {
        "req_s": round(statistics.median(c["req_s"] for c in rounds), 1),
        "p50_ms": round(statistics.median(c["p50_ms"] for c in rounds), 3),
        "p99_ms": round(statistics.median(c["p99_ms"] for c in rounds), 3),
        "requests": sum(c["requests"] for c in rounds),
        "errors": sum(c["errors"] for c in rounds),
    }
    if "log_drain_s" in rounds[0]:  # the API with its inference log on
        out["req_s_incl_log_drain"] = round(statistics.median(c["req_s_incl_log_drain"] for c in rounds), 1)
        out["log_drain_s_max"] = max(c["log_drain_s"] for c in rounds)
        out["log_rows_dropped"] = sum(c["log_rows_dropped"] for c in rounds)
    return out


def bench_group(
    workers: int,
    base_env: dict[str, str],
    bodies: dict[int, bytes],
    v2_bodies: dict[int, bytes],
    seconds: float,
    rounds: int,
    tmp: Path,
    inference_db: str = "",
) -> dict[str, Any]:
    """MLflow's server, MLServer, this API and the bare ASGI ceiling, each with ``workers`` workers, all up at
    once. They are started one after another (start-up times are not contended); then every cell is run on
    every endpoint in turn, the order rotating from cell to cell and round to round, so that each sees the
    same machine load; memory after load is read at the end."""
    w = workers
    services: list[dict[str, Any]] = []
    try:
        port = free_port()
        cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion"]
        cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(w)]
        mlflow_svc = start_service(f"mlflow-w{w}", cmd, base_env, port, "/ping", tmp / f"mlflow-w{w}.log")
        services.append(mlflow_svc)

        port = free_port()
        cmd, env, home = mlserver_setup(w, port, base_env, tmp)
        mls_svc = start_service(
            f"mlserver-w{w}", cmd, env, port, f"/v2/models/{MODEL}/ready", tmp / f"mlserver-w{w}.log", cwd=home
        )
        services.append(mls_svc)

        api = {}
        for name, log_env in (("api", "on"), ("api-log-off", "off")):
            port = free_port()
            env = {
                **base_env,
                "PORT": str(port),
                "WEB_CONCURRENCY": str(w),
                "HOST": "127.0.0.1",
                "API_AUTH": "off",  # the protocol against the peers'; authentication's own cost is measured apart
                "MODEL_CACHE_DIR": str(tmp / f"cache-{name}-w{w}"),  # fresh cache: start-up includes the download
                # As deployed, every scored row is logged (to a throwaway SQLite here, Postgres on Render); the
                # peers log nothing, so the same API with the log off is measured beside it.
                "INFERENCE_LOG": log_env,
                "APP_DATABASE_URL": inference_db or f"sqlite:///{tmp / f'inference-w{w}.db'}",
                "INFERENCE_SPOOL_DIR": str(tmp / f"spool-w{w}"),
            }
            cmd = [sys.executable, "-m", "serving"]
            api[name] = start_service(f"{name}-w{w}", cmd, env, port, "/health", tmp / f"{name}-w{w}.log")
            services.append(api[name])

        port = free_port()
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bare_asgi.py"), "--port", str(port), "--workers", str(w)]
        bare_svc = start_service(f"ceiling-w{w}", cmd, base_env, port, "/", tmp / f"ceiling-w{w}.log")
        services.append(bare_svc)

        endpoints = [
            {"endpoint": "mlflow", "service": mlflow_svc, "path": "/invocations", "bodies": bodies},
            {"endpoint": "mlserver-v2", "service": mls_svc, "path": f"/v2/models/{MODEL}/infer", "bodies": v2_bodies},
            {"endpoint": "mlserver-invocations", "service": mls_svc, "path": "/invocations", "bodies": bodies},
            {"endpoint": "api", "service": api["api"], "path": "/invocations", "bodies": bodies},
            {"endpoint": "api-log-off", "service": api["api-log-off"], "path": "/invocations", "bodies": bodies},
            {"endpoint": "ceiling", "service": bare_svc, "path": "/invocations", "bodies": bodies},
        ]
        diffs = same_answers(endpoints)
        for e in endpoints:  # warm-up: every worker has served requests, and each endpoint answers 200
            warm = run_cell(e["service"]["port"], e["bodies"][1], 8, 0.5, path=e["path"])
            if warm["errors"]:
                raise RuntimeError(f"{e['endpoint']}-w{w}: {warm['errors']} errors in warm-up")
            if e["endpoint"] == "api":
                wait_log_drained(e["service"]["port"], 0.0)
        cells = [(rows, conc) for rows in ROWS for conc in CONCURRENCY]
        raw: dict[str, dict[str, list]] = {e["endpoint"]: {f"{r}x{c}": [] for r, c in cells} for e in endpoints}
        load = []
        for r in range(rounds):
            load.append([round(x, 2) for x in os.getloadavg()])
            for i, (rows, conc) in enumerate(cells):
                k = (r + i) % len(endpoints)
                for e in endpoints[k:] + endpoints[:k]:
                    port = e["service"]["port"]
                    before = log_counts(port)["dropped"] if e["endpoint"] == "api" else 0.0
                    cell = run_cell(port, e["bodies"][rows], conc, seconds, path=e["path"])
                    if e["endpoint"] == "api":
                        cell.update(wait_log_drained(port, before))
                        cell["req_s_incl_log_drain"] = round(
                            cell["requests"] / (cell["wall_s"] + cell["log_drain_s"]), 1
                        )
                    raw[e["endpoint"]][f"{rows}x{conc}"].append(cell)
                    print(f"  w={w} round={r} {e['endpoint']:<21} rows={rows:<5} c={conc}  {cell}", flush=True)
        load.append([round(x, 2) for x in os.getloadavg()])
        for svc in services:
            svc["memory_after"] = memory_mib(svc["proc"].pid)
    finally:
        for svc in services:
            stop(svc["proc"])
    return {
        "workers": w,
        "loadavg_1_5_15_per_round": load,
        "same_answers_max_abs_diff": diffs,
        "services": [{k: v for k, v in svc.items() if k not in ("proc", "port")} for svc in services],
        "endpoints": {
            e["endpoint"]: {
                "service": e["service"]["name"],
                "path": e["path"],
                "cells": {key: summarize(rs) for key, rs in raw[e["endpoint"]].items()},
                "rounds": raw[e["endpoint"]],
            }
            for e in endpoints
        },
    }


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


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def evaluate(groups: dict[str, Any], api_name: str) -> tuple[dict[str, Any], dict[str, bool]]:
    """req/s ratios of the endpoint ``api_name`` over each peer and the ceiling, per worker count, and the
    project's targets for it."""
    ratios = {}
    for w, g in groups.items():
        ep = g["endpoints"]
        api = ep[api_name]["cells"]
        ratios[w] = {
            f"over_{peer}": {k: ratio(api[k]["req_s"], ep[peer]["cells"][k]["req_s"]) for k in api}
            for peer in ("mlflow", "mlserver-v2", "mlserver-invocations")
        }
        ratios[w]["share_of_ceiling"] = {k: ratio(api[k]["req_s"], ep["ceiling"]["cells"][k]["req_s"]) for k in api}
    svc = {s["name"]: s for g in groups.values() for s in g["services"]}
    api1, api2 = (groups[w]["endpoints"][api_name]["cells"] for w in ("w1", "w2"))
    mlflow = [r for w in ratios.values() for r in w["over_mlflow"].values() if r is not None]
    mlserver = [
        r for w in ratios.values() for peer in ("over_mlserver-v2", "over_mlserver-invocations")
        for r in w[peer].values() if r is not None
    ]  # fmt: skip
    targets = {
        "1row_c1_ratio_ge_2.5x": ratios["w1"]["over_mlflow"]["1x1"] >= 2.5,
        "1row_c1_p50_le_2ms": api1["1x1"]["p50_ms"] <= 2.0,
        "1000row_ratio_ge_2x": all(ratios[w]["over_mlflow"][f"1000x{c}"] >= 2 for w in ratios for c in CONCURRENCY),
        "2workers_c8_ratio_ge_4x": ratios["w2"]["over_mlflow"]["1x8"] >= 4,
        "2workers_pss_le_300mb": svc[f"{api_name}-w2"]["memory_after"]["pss_mib"] * 1.048576 <= 300,
        "healthy_le_3s": max(svc[f"{api_name}-w1"]["healthy_s"], svc[f"{api_name}-w2"]["healthy_s"]) <= 3.0,
        "never_slower": all(r >= 1 for r in mlflow),
        "never_slower_than_mlserver": all(r >= 1 for r in mlserver),
        "no_errors": all(c["errors"] == 0 for c in (*api1.values(), *api2.values())),
    }
    return ratios, targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracking-uri", default="", help="registry with diabetes-t2@champion (default: train one)")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each cell")
    ap.add_argument("--peer-rounds", type=int, default=3, help="rounds of every cell on every endpoint (medians)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving.json"))
    ap.add_argument(
        "--inference-db", default="", help="the API's inference log database (default: a throwaway SQLite file)"
    )
    ap.add_argument("--keep-tmp", action="store_true", help="keep the work folder (logs) after a successful run")
    ap.add_argument("--only-auth", action="store_true", help="only the authentication on/off comparison")
    ap.add_argument("--skip-auth", action="store_true", help="only the comparison with the peers")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds of the auth comparison")
    ap.add_argument("--auth-out", default=str(ROOT / "benchmarks" / "results" / "serving_auth.json"))
    args = ap.parse_args(argv)
    if not args.only_auth and not MLSERVER.exists():
        print(f"error: {MLSERVER} not found; set it up first:\n  {BENCH_SETUP}", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    base_env, version, spec = prepare_registry(args.tracking_uri, tmp)
    bodies = {n: payload(n, spec) for n in ROWS}
    v2_bodies = {n: v2_payload(n, spec) for n in ROWS}

    if not args.skip_auth:
        print("--- authentication off vs on (1 worker each, alternating)", flush=True)
        auth = auth_comparison(base_env, bodies, args.seconds, args.rounds, tmp)
        auth_out = Path(args.auth_out)
        auth_out.parent.mkdir(parents=True, exist_ok=True)
        auth_out.write_text(json.dumps({"model": f"{MODEL} v{version}", **auth}, indent=1), encoding="utf-8")
        print(auth_markdown(auth))
        print(f"\nwritten {auth_out}")
    if args.only_auth:
        return 0

    # Untimed: read every package once, so no service's start-up pays for a cold page cache.
    subprocess.run([sys.executable, "-c", "import mlflow.pyfunc, pandas, serving.app"], env=base_env, cwd=ROOT)
    subprocess.run([str(MLSERVER.parent / "python"), "-c", "import mlserver_mlflow, mlserver.server"], cwd=tmp)
    load_start = [round(x, 2) for x in os.getloadavg()]
    groups = {
        f"w{w}": bench_group(w, base_env, bodies, v2_bodies, args.seconds, args.peer_rounds, tmp, args.inference_db)
        for w in (1, 2)
    }
    load_end = [round(x, 2) for x in os.getloadavg()]

    ratios, targets = evaluate(groups, "api")
    ratios_off, targets_off = evaluate(groups, "api-log-off")
    result = {
        "model": f"{MODEL} v{version}",
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "loadavg_1_5_15_start": load_start,
            "loadavg_1_5_15_end": load_end,
        },
        "seconds_per_cell": args.seconds,
        "rounds": args.peer_rounds,
        "cell_figures": "median over the rounds of each round's req/s, p50 and p99; requests and errors summed",
        "body_bytes": {
            "dataframe_split": {n: len(b) for n, b in bodies.items()},
            "v2": {n: len(b) for n, b in v2_bodies.items()},
        },
        "groups": groups,
        "ratios_req_s": ratios,
        "targets_met": targets,
        # the same figures for the API with INFERENCE_LOG=off (not how it is deployed; the log's share)
        "ratios_req_s_log_off": ratios_off,
        "targets_met_log_off": targets_off,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(markdown(result))
    print(f"\nwritten {out}")
    if not args.keep_tmp:  # registry, caches, logs and the API's inference log: over 1 GB after a full run
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def markdown(result: dict[str, Any]) -> str:
    def fig(c: dict[str, Any]) -> str:
        err = f", {c['errors']} errors" if c["errors"] else ""
        return f"{c['req_s']:.0f} ({c['p50_ms']:.2f}, {c['p99_ms']:.1f}{err})"

    names = ("mlflow", "mlserver-v2", "mlserver-invocations", "api", "api-log-off", "ceiling")
    lines = []
    for w, g in result["groups"].items():
        ep, r = g["endpoints"], result["ratios_req_s"][w]
        lines += [
            f"{w}: req/s (p50, p99 ms), medians of {result['rounds']} rounds; load average per round "
            f"{g['loadavg_1_5_15_per_round']}",
            "",
            "| rows | conc | " + " | ".join(names) + " | API × mlflow | API × MLServer V2 | API × MLServer inv. |"
            " API / ceiling |",
            "|---:|---:|" + "---:|" * (len(names) + 4),
        ]
        for key in ep["api"]["cells"]:
            rows, conc = key.split("x")
            figs = " | ".join(fig(ep[n]["cells"][key]) for n in names)
            lines.append(
                f"| {rows} | {conc} | {figs} | {r['over_mlflow'][key]} | {r['over_mlserver-v2'][key]} |"
                f" {r['over_mlserver-invocations'][key]} | {r['share_of_ceiling'][key]:.0%} |"
            )
        lines += [
            "",
            "| rows | conc | API req/s | API req/s counting the log's drain after the cell | longest drain (s) |"
            " log rows dropped |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for key, c in ep["api"]["cells"].items():
            rows, conc = key.split("x")
            lines.append(
                f"| {rows} | {conc} | {c['req_s']:.0f} | {c['req_s_incl_log_drain']:.0f} | {c['log_drain_s_max']} |"
                f" {c['log_rows_dropped']:.0f} |"
            )
        lines.append("")
    lines += [
        "| service | healthy after (s) | RSS MiB (idle / after load) | PSS MiB (idle / after load) | processes |",
        "|---|---:|---:|---:|---:|",
    ]
    for g in result["groups"].values():
        for s in g["services"]:
            i, a = s["memory_idle"], s["memory_after"]
            lines.append(
                f"| {s['name']} | {s['healthy_s']} | {i['rss_mib']} / {a['rss_mib']} |"
                f" {i['pss_mib']} / {a['pss_mib']} | {a['processes']} |"
            )
    lines += ["", "| target | met (as deployed) | met with INFERENCE_LOG=off |", "|---|---|---|"]
    lines += [
        f"| {k} | {'yes' if v else 'NO'} | {'yes' if result['targets_met_log_off'][k] else 'NO'} |"
        for k, v in result["targets_met"].items()
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
