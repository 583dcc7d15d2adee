"""Render, rehearsed: every service of render.yaml started with its exact startCommand (PORT set, the
database URL pointing at the real Postgres on 127.0.0.1:5432, fromService resolved to loopback), every
healthCheckPath answering 2xx, and one prediction through the whole chain: bootstrap → registry (the
MLflow server on Postgres) → API → clinicians' app in Chromium."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import requests
import yaml
from mlflow import MlflowClient

from ui import spec

from .conftest import ROOT
from .deploy_helpers import example_patient, free_port, probability_shown_by_app, stop, wait_healthy

ARTIFACTS = ROOT / "test-artifacts"


def service_env(svc: dict, ports: dict[str, int], database_url: str, disk_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k not in ("DATABASE_URL", "PORT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # what Render's build installed
    mount = svc.get("disk", {}).get("mountPath")
    for var in svc.get("envVars", []):
        key = var["key"]
        if "value" in var:
            value = str(var["value"])
            env[key] = value.replace(mount, str(disk_root), 1) if mount and value.startswith(mount) else value
        elif "fromDatabase" in var:
            assert var["fromDatabase"]["property"] == "connectionString"
            env[key] = database_url
        elif "fromService" in var:
            assert var["fromService"]["property"] == "hostport"
            env[key] = f"127.0.0.1:{ports[var['fromService']['name']]}"
        elif var.get("generateValue"):
            env[key] = secrets.token_hex(16)
    env["PORT"] = str(ports[svc["name"]])  # what Render sets (the Blueprint's own PORT values included)
    env["RENDER_SERVICE_NAME"] = svc["name"]
    env["MODEL_CACHE_DIR"] = str(disk_root / "serving-cache")  # an instance's own disk, not the repo's
    return env


def test_blueprint_services_start_and_serve_the_whole_chain(postgres_url: str, tmp_path: Path) -> None:
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    services = {s["name"]: s for s in blueprint["services"]}
    ports = {name: free_port() for name in services}
    database_url = postgres_url.replace("postgresql://", "postgres://", 1)  # the form Render hands out
    procs, logs = {}, []
    try:
        for name, svc in services.items():
            log = tmp_path / f"{name}.log"
            logs.append(log)
            with log.open("wb") as fh:
                procs[name] = subprocess.Popen(
                    ["bash", "-c", svc["startCommand"]], cwd=ROOT, start_new_session=True, stdout=fh,
                    stderr=subprocess.STDOUT, env=service_env(svc, ports, database_url, tmp_path / name),
                )
        live = list(procs.values())
        # The API trains the first champion (full default CV) before it binds, so it gets the longest wait.
        for name, svc in services.items():
            wait_healthy(f"http://127.0.0.1:{ports[name]}{svc['healthCheckPath']}", live, 600, logs)

        api = f"http://127.0.0.1:{ports['diabetes-api']}"
        health = requests.get(f"{api}/health", timeout=5).json()
        assert health["status"] == "ok" and health["registry_reachable"] is True
        assert health["model"]["version"] == "1"

        # Bootstrap registered the champion in the MLflow server, whose store is the Postgres database.
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{ports['diabetes-mlflow']}")
        champion = client.get_model_version_by_alias("diabetes-t2", "champion")
        assert str(champion.version) == "1" and champion.tags["gate"] == "passed"
        import psycopg2

        with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM model_versions WHERE name = 'diabetes-t2'")
            assert cur.fetchone()[0] == 1

        info = requests.get(f"{api}/model/info", timeout=5).json()
        patient = example_patient(info["features"])
        answer = requests.post(f"{api}/predict", json=patient, timeout=10)
        assert answer.status_code == 200, answer.text
        expected = answer.json()["predictions"][0]["probability"]

        app = f"http://127.0.0.1:{ports['diabetes-streamlit']}"
        shown = probability_shown_by_app(app, info["features"], patient, ARTIFACTS / "deploy-smoke-app.png")
        assert shown == spec.format_probability(expected)
    finally:
        for proc in procs.values():
            stop(proc)
