"""The real stack the UI tests run against: a fresh SQLite registry with one trained model, and the serving
API (`python -m serving`) on a free loopback port. Started once per test session and shared by the UI test
modules (they import the ``ui_stack`` fixture from here; it is not a test module itself)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import FAST_TRAIN

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = ROOT / "test-artifacts"  # git-ignored: screenshots and logs of the UI tests
# The UI tests need a real registered model, not a carefully tuned one (the pipeline's own tests cover the search).
TRAIN_ARGS = FAST_TRAIN


@dataclass
class Stack:
    workdir: Path
    tracking_uri: str
    api_url: str
    env: dict[str, str]  # for child processes (the Streamlit server in the end-to-end test)
    train_s: float
    api_start_s: float
    procs: list[subprocess.Popen] = field(default_factory=list)
    stopped: bool = False

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(tracking_uri: str, artifact_root: str) -> dict[str, str]:
    """This process's environment, minus anything that could point a child at another registry or API."""
    drop = (
        "MODEL_CACHE_DIR",
        "INFERENCE_LOG",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_HOSTPORT",
        "DATABASE_URL",
        "MLFLOW_RUN_ID",
        "API_BASE_URL",
        "API_HOSTPORT",
        "MODEL_NAME",
        "MODEL_ALIAS",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_ARTIFACT_ROOT": artifact_root, "PYTHONPATH": str(ROOT)})
    # The API on loopback with authentication off, like the local stack (the app's key is tested with the API's).
    env.update({"HOST": "127.0.0.1", "API_AUTH": "off"})
    return env


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: process exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} not ready after {timeout_s}s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def login_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AppTest runs the app in this process, with no server: say it is bound to loopback, where the app allows
    UI_AUTH=off (the login itself is tested in tests/unit/test_ui_login.py and tests/e2e/)."""
    from streamlit import config

    monkeypatch.setenv("UI_AUTH", "off")
    previous = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", previous)


_STACK: Stack | None = None


def start_stack() -> Stack:
    global _STACK
    if _STACK is not None and not _STACK.stopped:
        return _STACK
    workdir = Path(tempfile.mkdtemp(prefix="ui-stack-"))
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env = child_env(tracking_uri, (workdir / "artifacts").as_uri())
    # The API caches downloaded versions by name and version only; a cache shared with other registries (the
    # default is <repo>/.serving-cache) would serve another registry's "version 1".
    env["MODEL_CACHE_DIR"] = str(workdir / "serving-cache")
    # The API's inference log (what the app scored, the outcomes it sent): this stack's own, not the project's file.
    env["APP_DATABASE_URL"] = f"sqlite:///{workdir / 'inference.db'}"
    env["INFERENCE_SPOOL_DIR"] = str(workdir / "inference-spool")

    t0 = time.monotonic()
    train = subprocess.run(
        [sys.executable, "-m", "pipeline.main", *TRAIN_ARGS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    train_s = time.monotonic() - t0
    if train.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"training failed ({train.returncode}):\n{train.stdout[-2000:]}\n{train.stderr[-3000:]}")

    port = free_port()
    log = workdir / "serving.log"
    t0 = time.monotonic()
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving"], cwd=ROOT, env={**env, "PORT": str(port)}, stdout=fh, stderr=fh
        )
    stack = Stack(workdir, tracking_uri, f"http://127.0.0.1:{port}", env, train_s, 0.0, [proc])
    try:
        wait_http(f"{stack.api_url}/health", proc, 120, log)
    except BaseException:
        stack.stop()
        raise
    stack.api_start_s = time.monotonic() - t0
    _STACK = stack
    return stack


@pytest.fixture(scope="session")
def ui_stack() -> Iterator[Stack]:
    stack = start_stack()
    yield stack
    stack.stop()  # idempotent: every module importing this fixture finalises it at session end
