"""Every setting of the app, read from the environment in one place.

Read on each script run (cheap) rather than frozen at import, so a redeploy with new env vars or a test that
points the app elsewhere never sees stale values.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# `streamlit run ui/app.py` only puts ui/ on sys.path; the project root is needed for `common` and `ui.*`.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from common.backend import tracking_uri as backend_tracking_uri  # noqa: E402 - needs the sys.path line above

DEFAULT_API_BASE_URL = "http://127.0.0.1:8002"
DEFAULT_MODEL_NAME = "diabetes-t2"
DEFAULT_MODEL_ALIAS = "champion"

# MLflow's HTTP client retries 7 times with exponential backoff by default: minutes of a frozen page when the
# tracking server is down. One quick retry keeps the "registry unreachable" banner within seconds. MLflow reads
# these from the environment on each request; explicit values set by the operator win.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def apply_mlflow_http_defaults() -> None:
    """Called before the first registry read (not at import, so importing ui.* has no side effect)."""
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


@dataclass(frozen=True)
class Settings:
    api_base_url: str
    tracking_uri: str
    model_name: str
    model_alias: str
    api_timeout_s: float  # read timeout for /predict; connecting gets a shorter, fixed one
    batch_chunk_rows: int  # rows per /predict call in batch scoring: bounds request size and drives the progress bar
    cache_ttl_s: int  # registry reads and /model/info: fast pages, and a new champion shows up within this delay


def api_base_url(env: Mapping[str, str]) -> str:
    if env.get("API_BASE_URL"):
        return env["API_BASE_URL"].rstrip("/")
    if env.get("API_HOSTPORT"):  # Render's fromService hostport: env vars cannot be concatenated there
        return f"http://{env['API_HOSTPORT']}"
    return DEFAULT_API_BASE_URL


def tracking_uri(env: Mapping[str, str]) -> str:
    if env.get("MLFLOW_TRACKING_URI"):
        return backend_tracking_uri(dict(env))  # also normalises postgres:// URLs
    if env.get("MLFLOW_TRACKING_HOSTPORT"):
        return f"http://{env['MLFLOW_TRACKING_HOSTPORT']}"
    return backend_tracking_uri(dict(env))  # DATABASE_URL, else the project's SQLite file


def _positive(env: Mapping[str, str], key: str, default: float) -> float:
    try:
        value = float(env.get(key, default))
    except ValueError:
        return default
    return value if value > 0 else default


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    return Settings(
        api_base_url=api_base_url(env),
        tracking_uri=tracking_uri(env),
        model_name=env.get("MODEL_NAME") or DEFAULT_MODEL_NAME,
        model_alias=env.get("MODEL_ALIAS") or DEFAULT_MODEL_ALIAS,
        api_timeout_s=_positive(env, "UI_API_TIMEOUT_S", 30.0),
        batch_chunk_rows=int(_positive(env, "UI_BATCH_CHUNK_ROWS", 200)),
        cache_ttl_s=int(_positive(env, "UI_CACHE_TTL_S", 60)),
    )
