"""Where the MLflow tracking store and model registry live, resolved from the environment.

Order: ``MLFLOW_TRACKING_URI`` (a tracking server or any MLflow URI), then
``MLFLOW_TRACKING_HOSTPORT`` (Render's ``fromService ... hostport`` of the MLflow server; Render cannot
build a URL from parts), then ``DATABASE_URL`` (Postgres, used directly), then an embedded SQLite file in
the project so a newcomer needs nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The same file and folder MLflow itself defaults to, so `mlflow ui` in the project sees them.
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "mlflow.db"
DEFAULT_ARTIFACT_ROOT = PROJECT_ROOT / "mlruns"


def normalize_database_url(url: str) -> str:
    """Rewrite a Postgres URL for SQLAlchemy with psycopg2.

    Render hands out ``postgres://`` (SQLAlchemy 2 rejects that scheme) or ``postgresql://``
    (SQLAlchemy maps it to psycopg 3, which we do not ship).
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def tracking_uri(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if env.get("MLFLOW_TRACKING_URI"):
        return normalize_database_url(env["MLFLOW_TRACKING_URI"])
    if env.get("MLFLOW_TRACKING_HOSTPORT"):
        return f"http://{env['MLFLOW_TRACKING_HOSTPORT']}"
    if env.get("DATABASE_URL"):
        return normalize_database_url(env["DATABASE_URL"])
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


def artifact_root(env: dict[str, str] | None = None) -> str:
    """Artifact location for new experiments when talking to a database directly."""
    env = os.environ if env is None else env
    return env.get("MLFLOW_ARTIFACT_ROOT") or DEFAULT_ARTIFACT_ROOT.as_uri()


def is_tracking_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def redact(uri: str) -> str:
    """The URI with any password removed, for logs and health output."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return uri
