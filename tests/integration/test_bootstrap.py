"""Bootstrap trains a champion once, even when two instances start together; later runs do nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from tests.conftest import FAST_TRAIN, ROOT, backend_env


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.bootstrap"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_two_instances_on_postgres_train_once(postgres_url: str, tmp_path: Path) -> None:
    env = backend_env(postgres_url.replace("postgresql://", "postgresql+psycopg2://"), tmp_path / "artifacts")
    env["DATABASE_URL"] = postgres_url  # the advisory lock lives here
    env["MODEL_NAME"] = "boot-model"
    # The lock is the subject: a quick training (the defaults run in tests/e2e/test_deploy_smoke.py).
    env["BOOTSTRAP_TRAIN_ARGS"] = " ".join(FAST_TRAIN)
    procs = [start(env), start(env)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    versions = client.search_model_versions("name='boot-model'")
    assert len(versions) == 1, outputs
    assert str(client.get_model_version_by_alias("boot-model", "champion").version) == "1"
    run = client.get_run(versions[0].run_id)
    assert run.data.params["family"] == "logistic" and run.data.params["cv_folds"] == "3"  # the options were used
    assert sum("training one on the bundled data" in out for out in outputs) == 1
    assert sum("nothing to do" in out for out in outputs) == 1

    again = start(env)
    out = again.communicate(timeout=120)[0]
    assert again.returncode == 0 and "nothing to do" in out
    assert len(client.search_model_versions("name='boot-model'")) == 1


def test_unreachable_registry_does_not_block_the_api(tmp_path: Path) -> None:
    env = backend_env("http://127.0.0.1:9", tmp_path / "artifacts")  # nothing listens on port 9
    env["BOOTSTRAP_TIMEOUT_S"] = "2"
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    proc = start(env)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0
    assert "registry unreachable" in out and "not bootstrapping" in out
