"""Every setting of the serving API, read from the environment in this one place.

| variable                  | default                     | meaning                                                   |
|---------------------------|-----------------------------|-----------------------------------------------------------|
| MODEL_NAME                | diabetes-t2                 | registered model to serve                                 |
| MODEL_ALIAS               | champion                    | alias followed (hot reload when it moves)                 |
| MLFLOW_TRACKING_URI       | see below                   | tracking/registry URI                                     |
| MLFLOW_TRACKING_HOSTPORT  |                             | host:port of the MLflow server (Render)                   |
| DATABASE_URL              |                             | Postgres registry when no tracking URI is given           |
| PORT                      | 8002                        | listen on 0.0.0.0:$PORT                                   |
| HOST                      | 0.0.0.0                     | bind address                                              |
| WEB_CONCURRENCY           | 1                           | worker processes                                          |
| MAX_BODY_BYTES            | 5000000                     | larger bodies → 413                                       |
| MAX_ROWS                  | 10000                       | more rows in one request → 413                            |
| REQUEST_TIMEOUT_S         | 10                          | work stops at the next checkpoint after this → 504        |
| RELOAD_INTERVAL_S         | 30                          | how often each worker checks the alias (0 = never)        |
| MODEL_CACHE_DIR           | <repo>/.serving-cache       | local copies of served versions (last good copy)          |
| ALLOW_EXTRA_COLUMNS       | false                       | true: ignore unknown columns instead of 400               |
| REGISTRY_TIMEOUT_S        | 5                           | bound on one registry call (HTTP tracking servers)        |
| LOG_LEVEL                 | info                        | logging level                                             |

Tracking URI order: MLFLOW_TRACKING_URI, then http://$MLFLOW_TRACKING_HOSTPORT, then DATABASE_URL, then the
project's SQLite file (the last two via common.backend).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.backend import PROJECT_ROOT, tracking_uri


class SettingsError(ValueError):
    """A setting with an unusable value; the message names the variable and the rule."""


def _int(env: dict[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be an integer") from None
    if value < minimum:
        raise SettingsError(f"{key} must be >= {minimum}")
    return value


def _float(env: dict[str, str], key: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number") from None
    if value < minimum:
        raise SettingsError(f"{key} must be >= {minimum}")
    return value


def _bool(env: dict[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{key} must be true or false")


def resolve_tracking_uri(env: dict[str, str]) -> str:
    # Render gives the API only host:port of the MLflow server; an explicit URI still wins.
    if not env.get("MLFLOW_TRACKING_URI") and env.get("MLFLOW_TRACKING_HOSTPORT"):
        return f"http://{env['MLFLOW_TRACKING_HOSTPORT']}"
    return tracking_uri(env)


@dataclass(frozen=True)
class Settings:
    model_name: str
    model_alias: str
    tracking_uri: str
    host: str
    port: int
    workers: int
    max_body_bytes: int
    max_rows: int
    request_timeout_s: float
    reload_interval_s: float
    cache_dir: Path
    allow_extra_columns: bool
    registry_timeout_s: float
    log_level: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(
            model_name=env.get("MODEL_NAME") or "diabetes-t2",
            model_alias=env.get("MODEL_ALIAS") or "champion",
            tracking_uri=resolve_tracking_uri(env),
            host=env.get("HOST") or "0.0.0.0",
            port=_int(env, "PORT", 8002, minimum=1),
            workers=_int(env, "WEB_CONCURRENCY", 1, minimum=1),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 5_000_000, minimum=1),
            max_rows=_int(env, "MAX_ROWS", 10_000, minimum=1),
            request_timeout_s=_float(env, "REQUEST_TIMEOUT_S", 10.0, minimum=0.001),
            reload_interval_s=_float(env, "RELOAD_INTERVAL_S", 30.0),
            cache_dir=Path(env.get("MODEL_CACHE_DIR") or PROJECT_ROOT / ".serving-cache"),
            allow_extra_columns=_bool(env, "ALLOW_EXTRA_COLUMNS", False),
            registry_timeout_s=_float(env, "REGISTRY_TIMEOUT_S", 5.0, minimum=0.1),
            log_level=(env.get("LOG_LEVEL") or "info").lower(),
        )

    def apply_mlflow_defaults(self) -> None:
        """Bound MLflow's HTTP retries so an unreachable tracking server cannot stall start-up for minutes.

        Only defaults: an operator's explicit MLFLOW_HTTP_* values win.
        """
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, self.registry_timeout_s))))
