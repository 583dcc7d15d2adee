"""`mlflow run` finds the registry the way every other part does (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_HOSTPORT,
DATABASE_URL, SQLite) and gates, promotes and rolls back the alias the API follows (MODEL_ALIAS) — on the real
Postgres, through MLflow's own project runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.conftest import ROOT, backend_env

NAME = "diabetes-t2"
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def mlflow_run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [MLFLOW, "run", str(ROOT), "--env-manager", "local", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_mlflow_run_uses_database_url_and_model_alias(postgres_url: str, tmp_path: Path) -> None:
    env = backend_env("", tmp_path / "artifacts")
    env.pop("MLFLOW_TRACKING_URI")  # as a user who only has DATABASE_URL (Render's postgres:// form)
    env["DATABASE_URL"] = postgres_url.replace("postgresql://", "postgres://", 1)
    env["MODEL_ALIAS"] = "production"
    # min_auc as typed on the command line ("0.80"): the pipeline must not log it again as "0.8".
    proc = mlflow_run(env, tmp_path, "--experiment-name", "t2", "-P", "cv_repeats=1", "-P", "cv_folds=3",
                      "-P", "family=logistic", "-P", "C=1", "-P", "calibration=none", "-P", "min_auc=0.80")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "promoted to @production" in proc.stdout

    # The version is in the Postgres registry, at MODEL_ALIAS; @champion was never set.
    client = MlflowClient(postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    mv = client.get_model_version_by_alias(NAME, "production")
    assert str(mv.version) == "1"
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(NAME, "champion")
    run = client.get_run(mv.run_id)
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    assert run.data.params["min_auc"] == "0.80" and run.data.params["cv_repeats"] == "1"
    assert client.get_experiment(run.info.experiment_id).name == "t2"

    # MLflow's default store holds only the launcher run, which points at the real one; no model is there.
    local = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert local.search_registered_models() == []
    (launcher,) = local.search_runs([local.get_experiment_by_name("t2").experiment_id])
    assert mv.run_id in launcher.data.tags["mlflow.note.content"]
    assert "note: `mlflow run` recorded its launcher run" in proc.stderr

    # The rollback entry point resolves the same registry and alias: nothing earlier than v1 yet.
    proc = mlflow_run(env, tmp_path, "-e", "rollback")
    assert proc.returncode != 0
    assert f"error: nothing to roll back to: {NAME}@production is v1" in proc.stderr
