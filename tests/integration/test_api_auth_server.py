"""Authentication and rate limits in the real service: `python -m serving` (gunicorn, 2 workers) on loopback, keys
made with the real `python -m serving.keys`, counters shared through the local Redis (127.0.0.1:6379) the way
Render's Key Value shares them, and the Streamlit app's API client sending its service key."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from deploy.rehearse import free_port
from tests.conftest import EXAMPLE_PATIENT, FAST_TRAIN, ROOT, backend_env, run_pipeline
from tests.deploy_helpers import stop, wait_healthy

pytestmark = pytest.mark.slow

SERVICE_KEY = secrets.token_urlsafe(32)
PER_KEY = 20  # RATE_LIMIT_PER_KEY for this server, per minute
REDIS = ("127.0.0.1", 6379)


@dataclass
class Api:
    url: str
    env: dict[str, str]
    log: Path


def keys_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving.keys", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    try:
        socket.create_connection(REDIS, timeout=2).close()
    except OSError as exc:
        pytest.fail(f"Redis at {REDIS[0]}:{REDIS[1]} is required for the shared rate-limit store: {exc}")
    tmp = tmp_path_factory.mktemp("auth-server")
    env = backend_env(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts")
    out = run_pipeline(env, *FAST_TRAIN)
    assert out.returncode == 0, out.stderr[-3000:]
    port = free_port()
    env.update(
        {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "API_AUTH": "on",
            "WEB_CONCURRENCY": "2",
            "MODEL_CACHE_DIR": str(tmp / "cache"),
            "APP_DATABASE_URL": f"sqlite:///{tmp / 'keys.db'}",
            "API_SERVICE_KEY": SERVICE_KEY,
            "RATE_LIMIT_STORAGE_URI": f"redis://{REDIS[0]}:{REDIS[1]}/0",
            "RATE_LIMIT_PER_KEY": f"{PER_KEY}/minute",
        }
    )
    env = {k: v for k, v in env.items() if not k.startswith("PROMETHEUS_") and k != "DATABASE_URL"}
    log = tmp / "server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", [proc], 120, [log])
        yield Api(f"http://127.0.0.1:{port}", env, log)
    finally:
        stop(proc)


def new_key(api: Api, scopes: str) -> str:
    name = f"it-{secrets.token_hex(5)}"
    out = keys_cli(api.env, "create", "--name", name, "--scopes", scopes)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_keys_from_the_cli_open_the_api_and_nothing_else_does(api: Api) -> None:
    key = new_key(api, "predict,info,metrics")
    r = requests.post(f"{api.url}/predict", json=EXAMPLE_PATIENT, timeout=10)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED" and r.json()["request_id"]
    auth = {"Authorization": f"Bearer {key}"}
    r = requests.post(f"{api.url}/predict", json=EXAMPLE_PATIENT, headers=auth, timeout=10)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert requests.get(f"{api.url}/health", timeout=5).status_code == 200  # Render's health check stays open

    metrics = requests.get(f"{api.url}/metrics", headers=auth, timeout=10).text
    assert 'serving_auth_failures_total{reason="missing"}' in metrics  # counted across the workers' files
    assert key not in api.log.read_text()

    name = next(line.split()[0] for line in keys_cli(api.env, "list").stdout.splitlines() if "predict,info" in line)
    assert keys_cli(api.env, "revoke", name).returncode == 0


def test_rate_limit_is_shared_by_the_workers(api: Api) -> None:
    key = new_key(api, "predict")
    codes = []
    for _ in range(PER_KEY + 3):  # a new connection each time: gunicorn spreads them over both workers
        r = requests.post(
            f"{api.url}/invocations", json={"dataframe_records": [EXAMPLE_PATIENT]},
            headers={"Authorization": f"Bearer {key}", "Connection": "close"}, timeout=10,
        )  # fmt: skip
        codes.append(r.status_code)
        if r.status_code == 429:
            assert 1 <= int(r.headers["retry-after"]) <= 60
    # In-process counters would let 2 workers accept up to twice the limit; the shared store counts exactly.
    assert codes == [200] * PER_KEY + [429] * 3


def test_the_apps_api_client_sends_its_service_key(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from ui import api as ui_api

    ui_api.model_info.clear()
    monkeypatch.delenv("API_SERVICE_KEY", raising=False)
    with pytest.raises(ui_api.ApiUnavailable) as refused:
        ui_api.model_info(api.url)
    assert refused.value.status == 401

    monkeypatch.setenv("API_SERVICE_KEY", SERVICE_KEY)
    info = ui_api.model_info(api.url)
    assert info["name"] == "diabetes-t2"
    answer = ui_api.predict(api.url, [EXAMPLE_PATIENT], "es", timeout=10)
    assert 0 < answer["predictions"][0]["probability"] < 1
    with requests.Session() as session:  # batch scoring's path
        assert ui_api.predict(api.url, [EXAMPLE_PATIENT] * 3, "en", 10, session=session)["predictions"]


def test_auth_off_is_refused_off_loopback(tmp_path: Path) -> None:
    env = {**backend_env(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")}
    env.update({"HOST": "0.0.0.0", "API_AUTH": "off", "PORT": str(free_port())})
    out = subprocess.run(
        [sys.executable, "-m", "serving"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "API_AUTH=off is only allowed when HOST is a loopback address" in out.stderr
