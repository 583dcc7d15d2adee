"""Render, rehearsed: every service of render.yaml started with its exact startCommand (PORT set, the
database URL pointing at the real Postgres on 127.0.0.1:5432, fromService resolved to loopback), every
healthCheckPath answering 2xx, and one prediction through the whole chain: bootstrap → registry (the
MLflow server on Postgres) → API → clinicians' app in Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from deploy import rehearse
from tests.conftest import ROOT
from tests.deploy_helpers import example_patient, probability_shown_by_app, wait_healthy
from ui import spec, users

ARTIFACTS = ROOT / "test-artifacts"


def assert_readme_figures(metrics: dict[str, float]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = re.search(r"^\| \*\*this model\*\*.*$", readme, re.MULTILINE)
    assert row, "README has no results row for this model"
    cells = [c.strip() for c in row.group(0).strip("|").split("|")]
    assert cells[1] == f"**{metrics['test_roc_auc']:.3f}**"
    assert cells[2] == f"**{metrics['test_brier']:.3f}**"
    assert cells[3] == f"**{int(metrics['test_errors'])}**"
    assert cells[4].startswith(f"{metrics['test_calibration_slope']:.2f} ")


def test_blueprint_services_start_and_serve_the_whole_chain(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = postgres_url.replace("postgresql://", "postgres://", 1)  # the form Render hands out
    # The app binds 0.0.0.0 there, so clinicians log in: one user in the app's database (inherited by the
    # rehearsed services from this environment).
    app_db = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("APP_DATABASE_URL", app_db)
    users.add(users.engine(app_db), "smoke", "a long smoke-test password")
    stack = rehearse.start(database_url, tmp_path)
    try:
        live, logs = list(stack.procs.values()), list(stack.logs.values())
        # The API trains the first champion (full default CV) before it binds, so it gets the longest wait.
        for name, svc in stack.services.items():
            wait_healthy(stack.url(name, svc["healthCheckPath"]), live, 600, logs)

        api = stack.url("diabetes-api")
        health = requests.get(f"{api}/health", timeout=5).json()
        assert health["status"] == "ok" and health["registry_reachable"] is True
        assert health["model"]["version"] == "1"

        assert health["signing"]["enabled"] is True
        # The MLflow server requires a user; the bootstrap's one is dead now that a champion exists.
        mlflow_url = stack.url("diabetes-mlflow")
        search = f"{mlflow_url}/api/2.0/mlflow/registered-models/search"
        assert requests.get(search, timeout=10).status_code == 401
        trainer = ("diabetes-trainer", stack.generated[("diabetes-mlflow", "MLFLOW_TRAINER_PASSWORD")])
        assert requests.get(search, auth=trainer, timeout=10).status_code == 401

        # Bootstrap registered the champion in the MLflow server, whose store is the Postgres database.
        admin_password = stack.generated[("diabetes-mlflow", "MLFLOW_AUTH_ADMIN_PASSWORD")]
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
        client = MlflowClient(tracking_uri=mlflow_url)
        champion = client.get_model_version_by_alias("diabetes-t2", "champion")
        assert str(champion.version) == "1" and champion.tags["gate"] == "passed"
        assert champion.tags["signature.verdict"] == "passed"  # signed by bootstrap with MODEL_SIGNING_KEY
        # The first deploy trains with the defaults, so its held-out figures are the ones the README reports.
        assert_readme_figures(client.get_run(champion.run_id).data.metrics)
        import psycopg2

        with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM model_versions WHERE name = 'diabetes-t2'")
            assert cur.fetchone()[0] == 1

        # Authentication on, as on Render: nothing without a credential; the app's service key (from the env
        # group both services read) opens /model/info and /predict.
        assert requests.get(f"{api}/model/info", timeout=5).status_code == 401
        auth = {"Authorization": f"Bearer {stack.envs['diabetes-api']['API_SERVICE_KEY']}"}
        assert stack.envs["diabetes-streamlit"]["API_SERVICE_KEY"] == stack.envs["diabetes-api"]["API_SERVICE_KEY"]
        info = requests.get(f"{api}/model/info", headers=auth, timeout=5).json()
        patient = example_patient(info["features"])
        answer = requests.post(f"{api}/predict", json=patient, headers=auth, timeout=10)
        assert answer.status_code == 200, answer.text
        expected = answer.json()["predictions"][0]["probability"]

        app = stack.url("diabetes-streamlit")
        shown = probability_shown_by_app(app, info["features"], patient, ARTIFACTS / "deploy-smoke-app.png",
                                         login=("smoke", "a long smoke-test password"))  # fmt: skip
        assert shown == spec.format_probability(expected, "es")

        # The daily monitoring cron, as Render runs it: logs in to MLflow as its own user (READ on the model,
        # EDIT on the monitoring experiment only) and writes one run about the predictions just made.
        cron = rehearse.run_cron(stack, "diabetes-monitor", database_url, tmp_path)
        assert cron.returncode == 0, cron.stdout[-2000:] + cron.stderr[-3000:]
        assert stack.envs["diabetes-monitor"]["MLFLOW_TRACKING_USERNAME"] == "diabetes-monitor"
        monitoring = client.get_experiment_by_name("diabetes-t2-monitoring")
        runs = client.search_runs([monitoring.experiment_id])
        assert len(runs) == 1 and runs[0].data.tags["model_version"] == "1"
        assert runs[0].data.metrics["prediction_count"] >= 1
        # Its user can write nowhere else: not in the training experiment, not on the model.
        monitor = ("diabetes-monitor", stack.generated[("diabetes-mlflow", "MLFLOW_MONITOR_PASSWORD")])
        training = client.get_experiment_by_name("diabetes-t2").experiment_id
        created = requests.post(f"{mlflow_url}/api/2.0/mlflow/runs/create", json={"experiment_id": training},
                                auth=monitor, timeout=10)  # fmt: skip
        assert created.status_code == 403, created.text
        moved = requests.post(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias", auth=monitor, timeout=10,
                              json={"name": "diabetes-t2", "alias": "champion", "version": "1"})  # fmt: skip
        assert moved.status_code == 403, moved.text
    finally:
        stack.stop()
