"""Helpers for the inference-log tests: a registry with a trained model, the real API on loopback, and
counting rows in the log database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import sqlalchemy as sa

from tests.conftest import FAST_TRAIN, ROOT, backend_env, run_pipeline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trained_registry(tmp: Path) -> dict[str, str]:
    env = backend_env(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts")
    out = run_pipeline(env, *FAST_TRAIN)
    assert out.returncode == 0, out.stderr[-3000:]
    return env


@dataclass
class Api:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group of the server this test started
                self.proc.wait(5)


def start_api(env: dict[str, str], tmp: Path, log_db: str, workers: int = 2, **extra: str) -> Api:
    port = free_port()
    child = {k: v for k, v in env.items() if not k.startswith(("PROMETHEUS_", "APP_DATABASE", "INFERENCE_"))}
    child.pop("DATABASE_URL", None)
    child.update(
        {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "API_AUTH": "off",  # authentication is not the subject here (loopback only, as the API allows)
            "WEB_CONCURRENCY": str(workers),
            "MODEL_CACHE_DIR": str(tmp / "cache"),
            "APP_DATABASE_URL": log_db,
            "INFERENCE_SPOOL_DIR": str(tmp / "spool"),
            # generous registry bounds: the shared test machine can be slow; a failed first load retries every 2 s
            "RELOAD_INTERVAL_S": "60",
            "REGISTRY_TIMEOUT_S": "30",
            **extra,
        }
    )
    log = tmp / f"api-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving"],
        cwd=ROOT,
        env=child,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = Api(proc, port, log)
    deadline = time.time() + 180
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(api.url + "/health", timeout=2).json().get("model", {}).get("version"):
                return api
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.2)
    api.stop()
    raise AssertionError(f"API not up within 180 s:\n{log.read_text()[-3000:]}")


def log_rows(url: str) -> list[dict]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("inference_log"):
                return []
            return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM inference_log ORDER BY id"))]
    finally:
        engine.dispose()


def wait_rows(url: str, n: int, timeout_s: float = 60) -> list[dict]:
    """Rows once the table holds at least ``n`` (then a short settle to catch any extra, duplicated rows)."""
    deadline = time.time() + timeout_s
    rows: list[dict] = []
    while time.time() < deadline:
        rows = log_rows(url)
        if len(rows) >= n:
            time.sleep(1.0)
            return log_rows(url)
        time.sleep(0.3)
    return rows
