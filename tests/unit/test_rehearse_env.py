"""deploy.rehearse resolves render.yaml as Render would: one generated API_SERVICE_KEY shared by the API and the app
through their env group, a JWT secret for the API only, and the Key Value's connection string for the limits."""

from __future__ import annotations

from pathlib import Path

import yaml

from deploy import rehearse


def test_env_group_and_key_value_are_resolved(tmp_path: Path) -> None:
    doc = yaml.safe_load((rehearse.ROOT / "render.yaml").read_text())
    web = {s["name"]: s for s in doc["services"] if s["type"] == "web"}
    ports = {name: 10000 + i for i, name in enumerate(web)}
    groups, generated = rehearse.group_env(doc), rehearse.generate_secrets(web)
    api = rehearse.service_env(web["diabetes-api"], ports, "postgres://db", tmp_path / "api", generated, groups)
    app = rehearse.service_env(web["diabetes-streamlit"], ports, "postgres://db", tmp_path / "app", generated, groups)
    assert len(api["API_SERVICE_KEY"]) >= 32 and api["API_SERVICE_KEY"] == app["API_SERVICE_KEY"]
    assert len(api["JWT_SECRET_KEY"]) >= 32 and "JWT_SECRET_KEY" not in app
    assert api["RATE_LIMIT_STORAGE_URI"].startswith("redis://")
    assert "API_AUTH" not in api  # authentication on, as deployed
    # The MLflow users' passwords are generated once by the MLflow service and copied, never re-generated.
    assert api["MLFLOW_TRACKING_PASSWORD"] == generated[("diabetes-mlflow", "MLFLOW_API_PASSWORD")]
