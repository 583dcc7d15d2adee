"""The MLflow server with authentication, as render.yaml starts it (``python -m deploy.mlflow_server`` with
basic-auth on the real Postgres), and the signed-version defence in the API.

1. Nobody gets in without a user; the API's and the app's users only read; only a user with MANAGE on the
   model (or EDIT, see docs) changes it; service users are provisioned idempotently; the bootstrap credential
   is dead once a champion exists; ``python -m deploy.users add`` makes a data scientist's user.
2. The attack from issue 8: a version's ``risk_model.py`` is overwritten with a payload, registered as a new
   version through the REST API and ``@champion`` pointed at it. The API keeps serving the signed version, the
   payload never runs (its marker file never appears) and /health is degraded with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests

from deploy import users
from tests.conftest import FAST_TRAIN, ROOT, run_pipeline
from tests.deploy_helpers import free_port, stop, tails, wait_healthy

pytestmark = pytest.mark.slow

MODEL = "diabetes-t2"
PASSWORDS = {
    "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-secret-0123456789",
    "MLFLOW_API_PASSWORD": "api-secret-0123456789",
    "MLFLOW_APP_PASSWORD": "app-secret-0123456789",
    "MLFLOW_TRAINER_PASSWORD": "trainer-secret-0123456789",
}
SIGNING_KEY = "signing-key-for-tests-0123456789"


@dataclass
class AuthServer:
    proc: subprocess.Popen
    url: str
    env: dict[str, str]
    log: Path

    def creds(self, user: str) -> tuple[str, str]:
        password = {
            "admin": "MLFLOW_AUTH_ADMIN_PASSWORD",
            users.API_USER: "MLFLOW_API_PASSWORD",
            users.APP_USER: "MLFLOW_APP_PASSWORD",
            users.TRAINER_USER: "MLFLOW_TRAINER_PASSWORD",
        }[user]
        return user, PASSWORDS[password]

    def client_env(self, user: str, **extra: str) -> dict[str, str]:
        """A child-process environment that talks to this server as ``user``."""
        name, password = self.creds(user)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "DATABASE_URL"}
        env.update(MLFLOW_TRACKING_URI=self.url, MLFLOW_TRACKING_USERNAME=name, MLFLOW_TRACKING_PASSWORD=password,
                   PYTHONPATH=str(ROOT), **extra)  # fmt: skip
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def call(self, user: str | None, method: str, path: str, body: dict | None = None) -> int:
        auth = self.creds(user) if user else None
        kw = {"params": body} if method == "GET" else {"json": body or {}}
        return requests.request(method, self.url + path, auth=auth, timeout=20, **kw).status_code


@pytest.fixture
def auth_server(postgres_url: str, tmp_path: Path) -> Iterator[AuthServer]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RENDER_"))}
    env.update(PASSWORDS, DATABASE_URL=postgres_url.replace("postgresql://", "postgres://", 1), PORT=str(port),
               HOST="127.0.0.1", MODEL_NAME=MODEL, MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "mlartifacts"),
               MLFLOW_FLASK_SERVER_SECRET_KEY="flask-secret", PYTHONPATH=str(ROOT),
               MLFLOW_AUTH_CONFIG_PATH=str(tmp_path / "auth" / "auth.ini"))  # fmt: skip
    log = tmp_path / "mlflow.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.mlflow_server"], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    server = AuthServer(proc, f"http://127.0.0.1:{port}", env, log)
    try:
        wait_healthy(f"{server.url}/health", [proc], 120, [log])
        deadline = time.monotonic() + 120  # the users are created once the server answers
        while "deploy.users: diabetes-trainer" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, tails([log])
            time.sleep(0.3)
        yield server
    finally:
        stop(proc)


def test_anonymous_and_read_only_users_cannot_change_the_registry(
    auth_server: AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = auth_server
    ini = Path(s.env["MLFLOW_AUTH_CONFIG_PATH"])
    assert "default_permission = NO_PERMISSIONS" in ini.read_text() and ini.stat().st_mode & 0o077 == 0
    assert PASSWORDS["MLFLOW_AUTH_ADMIN_PASSWORD"] not in ini.read_text()

    # The trainer (bootstrap's user) creates the model and a version, as bootstrap would.
    trainer = subprocess.run([sys.executable, "-c", TRAINER_SCRIPT], env=s.client_env(users.TRAINER_USER),
                             cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert trainer.returncode == 0, trainer.stderr[-3000:]
    run_id = trainer.stdout.split()[-1]
    version_body = {"name": MODEL, "source": f"runs:/{run_id}/model", "run_id": run_id}
    alias = {"name": MODEL, "alias": "champion", "version": "1"}

    # Anonymous, or a wrong password: 401 on reads, writes and artifact uploads alike.
    assert s.call(None, "GET", "/api/2.0/mlflow/experiments/search", {"max_results": 1}) == 401
    assert s.call(None, "GET", "/api/2.0/mlflow/registered-models/search") == 401
    assert s.call(None, "POST", "/api/2.0/mlflow/registered-models/create", {"name": "evil"}) == 401
    assert s.call(None, "POST", "/api/2.0/mlflow/registered-models/alias", alias) == 401
    assert s.call(None, "DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": MODEL}) == 401
    put = requests.put(f"{s.url}/api/2.0/mlflow-artifacts/artifacts/1/evil.py", data=b"x", timeout=10)
    assert put.status_code == 401
    wrong = requests.get(f"{s.url}/api/2.0/mlflow/registered-models/search", auth=("admin", "nope-nope-nope"),
                         timeout=10)  # fmt: skip
    assert wrong.status_code == 401

    # The API's and the app's users read the model, and can change nothing about it (403).
    for user in (users.API_USER, users.APP_USER):
        assert s.call(user, "GET", "/api/2.0/mlflow/registered-models/alias", {"name": MODEL, "alias": "champion"}) \
            == 200  # fmt: skip
        assert s.call(user, "POST", "/api/2.0/mlflow/registered-models/alias", alias) == 403
        assert s.call(user, "DELETE", "/api/2.0/mlflow/registered-models/alias", {"name": MODEL, "alias": "champion"}) \
            == 403  # fmt: skip
        assert s.call(user, "POST", "/api/2.0/mlflow/model-versions/create", version_body) == 403
        assert (
            s.call(
                user,
                "POST",
                "/api/2.0/mlflow/model-versions/set-tag",
                {"name": MODEL, "version": "1", "key": "signature.verdict", "value": "passed"},
            )
            == 403
        )
        assert s.call(user, "DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": MODEL}) == 403
        upload = requests.put(f"{s.url}/api/2.0/mlflow-artifacts/artifacts/1/{run_id}/artifacts/model/x.py",
                              data=b"x", auth=s.creds(user), timeout=10)  # fmt: skip
        assert upload.status_code == 403, user
    # The API's user is denied runs (metrics, params, run artifacts); the app's user shows them on its model page.
    assert s.call(users.API_USER, "GET", "/api/2.0/mlflow/runs/get", {"run_id": run_id}) == 403
    assert s.call(users.APP_USER, "GET", "/api/2.0/mlflow/runs/get", {"run_id": run_id}) == 200

    # A user with MANAGE on the model moves the alias and registers versions.
    assert s.call(users.TRAINER_USER, "POST", "/api/2.0/mlflow/model-versions/create", version_body) == 200
    assert s.call(users.TRAINER_USER, "POST", "/api/2.0/mlflow/registered-models/alias", alias | {"version": "2"}) \
        == 200  # fmt: skip

    # Bootstrap trains as the trainer, then disarms it; the API's own credential is back in the environment.
    from pipeline.bootstrap import bootstrap_credential

    api_user, api_password = s.creds(users.API_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", api_user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", api_password)
    monkeypatch.setenv("MLFLOW_BOOTSTRAP_USERNAME", users.TRAINER_USER)
    monkeypatch.setenv("MLFLOW_BOOTSTRAP_PASSWORD", PASSWORDS["MLFLOW_TRAINER_PASSWORD"])
    with bootstrap_credential(s.url) as disarm:
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == users.TRAINER_USER
        disarm()
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == s.creds(users.API_USER)
    assert s.call(users.TRAINER_USER, "GET", "/api/2.0/mlflow/registered-models/search") == 401

    # Provisioning again (a restart) is idempotent, and keeps the trainer disarmed now that a champion exists.
    assert users.provision(s.env, s.url)[-1].startswith(f"{users.TRAINER_USER}: disarmed")
    assert s.call(users.TRAINER_USER, "GET", "/api/2.0/mlflow/registered-models/search") == 401
    assert s.call(users.API_USER, "GET", "/api/2.0/mlflow/registered-models/search") == 200

    # A data scientist's user: created by the documented command, password printed once on the last line.
    added = subprocess.run([sys.executable, "-m", "deploy.users", "add", "alice"], env=s.client_env("admin"),
                           cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert added.returncode == 0, added.stderr
    alice = ("alice", added.stdout.strip().splitlines()[-1])
    assert PASSWORDS["MLFLOW_AUTH_ADMIN_PASSWORD"] not in added.stdout
    r = requests.post(f"{s.url}/api/2.0/mlflow/model-versions/create", json=version_body, auth=alice, timeout=10)
    assert r.status_code == 200, r.text  # EDIT on models: may register versions
    again = subprocess.run([sys.executable, "-m", "deploy.users", "add", "alice"], env=s.client_env("admin"),
                           cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 2 and "already exists" in again.stderr
    # Only an admin can create users.
    refused = subprocess.run(
        [sys.executable, "-m", "deploy.users", "add", "mallory"],
        env=s.client_env(users.API_USER),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "403" in refused.stderr


TRAINER_SCRIPT = """
import tempfile, pathlib, mlflow
from mlflow import MlflowClient
mlflow.set_experiment("diabetes-t2")
with mlflow.start_run() as run:
    d = pathlib.Path(tempfile.mkdtemp()); (d / "MLmodel").write_text("flavors: {}\\n")
    mlflow.log_artifact(str(d / "MLmodel"), "model")
c = MlflowClient()
c.create_registered_model("diabetes-t2")
v = c.create_model_version("diabetes-t2", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
c.set_registered_model_alias("diabetes-t2", "champion", v.version)
print(run.info.run_id)
"""


def _health(url: str) -> dict:
    try:
        return requests.get(f"{url}/health", timeout=10).json()
    except requests.RequestException:  # not listening yet
        return {"status": None, "reason": None}


def _wait_for(url: str, predicate, timeout_s: float, what: str, logs: list[Path]) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = _health(url)
        if predicate(doc):
            return doc
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout_s}s; last /health {doc}\n{tails(logs)}")


def _start_api(s: AuthServer, tmp_path: Path, label: str, **extra: str) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    extra = {"MODEL_SIGNING_KEY": SIGNING_KEY, **extra}
    env = s.client_env(users.API_USER, **extra, PORT=str(port), HOST="127.0.0.1",
                       MODEL_CACHE_DIR=str(tmp_path / f"cache-{label}"), RELOAD_INTERVAL_S="1",
                       WEB_CONCURRENCY="1", API_AUTH="off")  # fmt: skip
    log = tmp_path / f"api-{label}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "serving"], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    return proc, f"http://127.0.0.1:{port}", log


def test_tampered_version_never_runs_in_the_api(auth_server: AuthServer, tmp_path: Path, monkeypatch) -> None:
    s = auth_server
    marker = tmp_path / "PWNED"
    trained = run_pipeline(s.client_env(users.TRAINER_USER, MODEL_SIGNING_KEY=SIGNING_KEY), *FAST_TRAIN)
    assert trained.returncode == 0, trained.stderr[-3000:]

    # The attacker: a registry user with MANAGE on the model (here the admin) but without the signing key.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORDS["MLFLOW_AUTH_ADMIN_PASSWORD"])
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(s.url)
    client = MlflowClient(s.url, s.url)
    v1 = client.get_model_version(MODEL, "1")
    assert v1.tags["signature.verdict"] == "passed" and v1.tags["gate"] == "passed"
    assert v1.tags["signature.scheme"] == "hmac-sha256-v1" and len(v1.tags["signature.hmac"]) == 64
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    # The input example stored with the version is synthetic: no row of the bundled data (real people).
    files = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL}/1", dst_path=str(tmp_path / "v1")))
    example = json.loads((files / "input_example.json").read_text())
    rows = pd.DataFrame(example["data"], columns=example["columns"]).astype(float)
    real = pd.concat([pd.read_csv(ROOT / "data" / "pima" / n) for n in ("pima_tr.csv", "pima_te.csv", "pima_tr2.csv")])
    assert len(rows) == 3 and rows.merge(_as_api_columns(real, rows.columns), how="inner").empty

    api, url, log = _start_api(s, tmp_path, "first")
    try:
        wait_healthy(f"{url}/health", [api], 120, [log, s.log])
        doc = _health(url)
        assert doc["status"] == "ok" and doc["model"]["version"] == "1" and doc["signing"]["enabled"] is True

        # The attack: overwrite the version's code with a payload, register those files as a new version with
        # the signed version's tags copied, and point @champion at it.
        original = (files / "risk_model.py").read_text()
        payload = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('payload ran')\n"
        (files / "risk_model.py").write_text(original + "\n" + payload)  # runs at import
        model_id = v1.model_id or v1.source.removeprefix("models:/")  # the logged model holding the files
        client.log_model_artifacts(model_id, str(files))  # overwrites the stored files in place
        copied = {k: v for k, v in v1.tags.items() if k.startswith(("signature.", "gate"))}
        v2 = client.create_model_version(MODEL, v1.source, run_id=v1.run_id, tags=copied, model_id=model_id)
        client.set_registered_model_alias(MODEL, "champion", v2.version)
        refused = f"version {v2.version} could not be loaded"
        doc = _wait_for(url, lambda d: refused in (d["reason"] or ""), 60, refused, [log])
        assert doc["status"] == "degraded" and doc["model"]["version"] == "1", doc
        assert "invalid signature" in doc["reason"] and "still serving version 1" in doc["reason"], doc

        # The same files registered without any signature.
        v3 = client.create_model_version(MODEL, v1.source, run_id=v1.run_id, model_id=model_id)
        client.set_registered_model_alias(MODEL, "champion", v3.version)
        refused = f"version {v3.version} could not be loaded"
        doc = _wait_for(url, lambda d: refused in (d["reason"] or ""), 60, refused, [log])
        assert doc["status"] == "degraded" and "version 3 is not signed" in doc["reason"], doc

        # The signed version keeps answering.
        from tests.conftest import example_patient

        info = requests.get(f"{url}/model/info", timeout=10)
        if info.status_code == 200:  # the API's own authentication (issue 8, item 3) may protect it
            patient = example_patient(info.json()["features"])
            answer = requests.post(f"{url}/predict", json=patient, timeout=10)
            assert answer.status_code == 200 and answer.json()["model"]["version"] == "1", answer.text

        # Back to the signed champion: healthy again.
        client.set_registered_model_alias(MODEL, "champion", "1")
        _wait_for(url, lambda d: d["status"] == "ok" and d["reason"] is None, 60, "recovery", [log])
    finally:
        stop(api)

    # A fresh API instance (empty cache) finds the signed version 1 whose stored files were overwritten: the
    # digest no longer matches, so it serves nothing rather than run them.
    api, url, log = _start_api(s, tmp_path, "fresh")
    try:
        doc = _wait_for(url, lambda d: d["status"] == "down" and d["reason"], 120, "refusal at start", [log])
        assert "version 1's files differ from the signed ones" in doc["reason"], doc
    finally:
        stop(api)
    assert not marker.exists(), "the payload ran"

    # The control: the same attack against an API without the signing key runs the payload, so it is the
    # signature check (and nothing else in this setup) that stopped it.
    client.set_registered_model_alias(MODEL, "champion", v2.version)
    api, url, log = _start_api(s, tmp_path, "unsigned", MODEL_SIGNING_KEY="")
    try:
        doc = _wait_for(url, lambda d: d["status"] == "ok", 120, "the unsigned API serving version 2", [log])
        assert doc["model"]["version"] == v2.version and doc["signing"]["enabled"] is False, doc
        assert marker.read_text() == "payload ran"
    finally:
        stop(api)


def _as_api_columns(real: pd.DataFrame, names: pd.Index) -> pd.DataFrame:
    from pipeline.config import load_config

    config = load_config(ROOT / "data" / "pima" / "dataset.yaml")
    columns = {f.name: f.column for f in config.features}
    return real[[columns[n] for n in names]].set_axis(list(names), axis=1).astype(float)
