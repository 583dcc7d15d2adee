"""The inference log's own process (serving/inference_logd.py) under the real `python -m serving`: started with
the API, started again when it dies, and gone when the API is gone. SQLite log (the process is the subject; the
database paths are tested in test_inference_log.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import EXAMPLE_PATIENT
from tests.inference_helpers import log_rows, start_api, trained_registry, wait_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return trained_registry(tmp_path_factory.mktemp("registry"))


def log_process(api_pid: int) -> int | None:
    """The pid of the API's log process (a child of the gunicorn master)."""
    out = subprocess.run(["pgrep", "-P", str(api_pid), "-f", "serving.inference_logd"], capture_output=True,
                         text=True)  # fmt: skip
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else None


def until(check, timeout_s: float = 30):  # noqa: ANN001, ANN201 - a small poll
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def dead(pid: int) -> bool:
    """Gone and reaped. (A killed process's leader turns zombie before its other threads have let go of its
    sockets; rows handed to it until then are lost with it, as the README says of a hard kill.)"""
    return not Path(f"/proc/{pid}").exists()


def score(url: str, n: int, rid: str) -> list[str]:
    ids = []
    for i in range(n):
        r = requests.post(url + "/invocations", json={"dataframe_records": [EXAMPLE_PATIENT]}, timeout=10,
                          headers={"X-Request-ID": f"{rid}-{i}"})  # fmt: skip
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-request-id"])
    return ids


def test_the_log_process_is_restarted_and_the_api_never_fails(registry: dict[str, str], tmp_path: Path) -> None:
    env = registry
    url = f"sqlite:///{tmp_path / 'log.db'}"
    api = start_api(env, tmp_path, url, workers=2)
    try:
        first = until(lambda: log_process(api.proc.pid))
        before = score(api.url, 40, "before")
        assert len(wait_rows(url, 40)) == 40
        os.kill(first, signal.SIGKILL)  # an out-of-memory kill, say
        until(lambda: dead(first), 10)
        during = score(api.url, 40, "during")  # answered while the log process is gone or starting again
        second = until(lambda: (p := log_process(api.proc.pid)) and p != first and p)
        after = score(api.url, 40, "after")
        rows = wait_rows(url, 120, timeout_s=30)
        logged = {r["request_id"] for r in rows}
        assert set(before) <= logged and set(after) <= logged
        # The killed process had written everything it received; the workers kept the rows scored while it was
        # gone until the new one was up.
        assert set(during) <= logged, len(set(during) - logged)
        assert len(rows) == len(logged) == 120  # once each
        health = until(lambda: (h := requests.get(api.url + "/health", timeout=5).json())["status"] == "ok" and h)
        assert health["inference_log"]["process"] == "connected" and second
        assert "inference log process exited" in api.log.read_text()
    finally:
        api.stop()
    assert log_process(api.proc.pid) is None
    assert not [p for p in Path("/tmp").glob("dm2-logd-*") if str(api.proc.pid) in p.name]


def test_the_log_process_leaves_with_the_api_even_when_killed(registry: dict[str, str], tmp_path: Path) -> None:
    env = registry
    url = f"sqlite:///{tmp_path / 'log.db'}"
    api = start_api(env, tmp_path, url, workers=1)
    logd = until(lambda: log_process(api.proc.pid))
    score(api.url, 20, "x")
    time.sleep(0.5)  # the worker sends within INFERENCE_FLUSH_MS
    os.kill(api.proc.pid, signal.SIGKILL)  # the gunicorn master only
    api.proc.wait(10)

    try:
        until(lambda: dead(logd), 15)  # it noticed its parent was gone, wrote what it held, and left
        assert len(log_rows(url)) == 20
    finally:
        try:
            os.killpg(api.proc.pid, signal.SIGKILL)  # anything of that API still running
        except ProcessLookupError:
            pass
