"""Every setting of the serving API, read from the environment in this one place (pydantic-settings).

A bad value stops ``python -m serving`` before it binds a port, with a message naming the variable and the
rule (``SettingsError``). Empty values mean "use the default". Shared settings (model name and alias, the
tracking URI) come from ``common.settings``.

| variable                 | default               | rule            | meaning                                     |
|--------------------------|-----------------------|-----------------|---------------------------------------------|
| MODEL_NAME               | diabetes-t2           | non-empty       | registered model to serve                   |
| MODEL_ALIAS              | champion              | [A-Za-z0-9_-]   | alias followed (hot reload when it moves)   |
| MLFLOW_TRACKING_URI      | see below             |                 | tracking/registry URI                       |
| MLFLOW_TRACKING_HOSTPORT |                       | host:port       | host:port of the MLflow server (Render)     |
| DATABASE_URL             |                       |                 | Postgres registry (no tracking URI)         |
| PORT                     | 8002                  | 1..65535        | listen on $HOST:$PORT                       |
| HOST                     | 0.0.0.0               | non-empty       | bind address                                |
| WEB_CONCURRENCY          | 1                     | >= 1            | worker processes                            |
| MAX_BODY_BYTES           | 5000000               | >= 1            | larger bodies → 413                         |
| MAX_ROWS                 | 10000                 | >= 1            | more rows in one request → 413              |
| MAX_COLUMNS              | 1000                  | >= 1            | more columns / keys per object → 413 (*)    |
| MAX_VALUE_CHARS          | 256                   | >= 1            | longer column name or text value → 413 (*)  |
| MAX_DECODED_BYTES        | 32000000              | >= 1            | Parquet decoding to more → 413              |
| REQUEST_TIMEOUT_S        | 10                    | > 0             | stop work (parsing too) after this → 504    |
| BODY_READ_TIMEOUT_S      | 10                    | > 0             | body not received in time → 408, closed     |
| KEEPALIVE_TIMEOUT_S      | 5                     | > 0             | idle connection closed after this           |
| MAX_CONNECTIONS          | 100                   | >= 1            | open connections per worker; beyond → 503   |
| RELOAD_INTERVAL_S        | 30                    | >= 0            | alias check period (0 = never)              |
| MODEL_CACHE_DIR          | <repo>/.serving-cache |                 | last good local copies                      |
| ALLOW_EXTRA_COLUMNS      | false                 | true/false      | true: ignore unknown columns instead of 400 |
| REGISTRY_TIMEOUT_S       | 5                     | >= 0.1          | bound on one registry call                  |
| LOG_LEVEL                | info                  | debug..critical | logging level                               |

(*) never below what the served model itself needs: its feature count, its longest feature name or category.

Why these limits (issue 8, "abuse limits that hold before any parsing"; what each one bounds is in
``serving/decode.py`` and ``serving/worker.py``):
- MAX_COLUMNS 1000: a fixed number, not a multiple of the model's features, so promoting a version does not
  change what clients may send; far above a clinic export sent with ALLOW_EXTRA_COLUMNS (tens to a few hundred
  columns), far below the 500,000-column CSV that once took 15 s and 840 MiB.
- MAX_VALUE_CHARS 256: a number, a category label or a column name is far shorter; free text (notes) is not model
  input and has no reason to be sent to a scoring API.
- MAX_DECODED_BYTES 32 MB: what a Parquet body may cost once read: its text columns' pages (read
  dictionary-encoded first, to measure them) and the model's own columns decoded (the only ones decoded; by pyarrow
  and then pandas, about three times their size at the peak). It keeps a worker (about 200 MiB idle) under
  350 MiB and is far above 10,000 rows of the model's columns (under 1 MB as numbers, under 20 MB as text).
- BODY_READ_TIMEOUT_S 10: the largest body (5 MB) needs 4 Mbit/s to arrive in time; raise it with MAX_BODY_BYTES
  for clients on slow links. The request's head has the same bound; a connection that sends nothing is idle.
- MAX_CONNECTIONS 100: a 1-row request takes about 1 ms, so 100 open connections per worker is far above what a
  clinic's clients keep open; beyond it a new connection is answered 503 and closed at once (uvicorn's own limit
  waits for the request head, holding the socket meanwhile). Bodies being received hold at most 4 × MAX_BODY_BYTES
  per worker in memory; more uploads at once → 503.

Tracking URI order (``common.settings``): MLFLOW_TRACKING_URI, then http://$MLFLOW_TRACKING_HOSTPORT, then
DATABASE_URL, then the project's SQLite file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from common.backend import PROJECT_ROOT
from common.settings import CommonSettings, SettingsError

__all__ = ["Settings", "SettingsError"]


class Settings(CommonSettings):
    host: str = Field("0.0.0.0", validation_alias="HOST", min_length=1, description="bind address")
    port: int = Field(8002, validation_alias="PORT", ge=1, le=65535, description="listen port")
    workers: int = Field(1, validation_alias="WEB_CONCURRENCY", ge=1, description="worker processes")
    max_body_bytes: int = Field(5_000_000, validation_alias="MAX_BODY_BYTES", ge=1, description="larger → 413")
    max_rows: int = Field(10_000, validation_alias="MAX_ROWS", ge=1, description="more rows per request → 413")
    max_columns: int = Field(
        1000, validation_alias="MAX_COLUMNS", ge=1, description="more columns (or keys in a JSON object) → 413"
    )
    max_value_chars: int = Field(
        256, validation_alias="MAX_VALUE_CHARS", ge=1, description="longer column name or text value → 413"
    )
    max_decoded_bytes: int = Field(
        32_000_000, validation_alias="MAX_DECODED_BYTES", ge=1, description="Parquet decoding to more → 413"
    )
    request_timeout_s: float = Field(
        10.0, validation_alias="REQUEST_TIMEOUT_S", gt=0, allow_inf_nan=False, description="→ 504 after this"
    )
    body_read_timeout_s: float = Field(
        10.0, validation_alias="BODY_READ_TIMEOUT_S", gt=0, allow_inf_nan=False, description="→ 408 and closed"
    )
    keepalive_timeout_s: float = Field(
        5.0, validation_alias="KEEPALIVE_TIMEOUT_S", gt=0, allow_inf_nan=False, description="idle connection closed"
    )
    max_connections: int = Field(
        100, validation_alias="MAX_CONNECTIONS", ge=1, description="open connections per worker; beyond → 503"
    )
    reload_interval_s: float = Field(
        30.0, validation_alias="RELOAD_INTERVAL_S", ge=0, allow_inf_nan=False, description="alias check (0 = never)"
    )
    cache_dir: Path = Field(
        PROJECT_ROOT / ".serving-cache", validation_alias="MODEL_CACHE_DIR", description="local model copies"
    )
    allow_extra_columns: bool = Field(
        False, validation_alias="ALLOW_EXTRA_COLUMNS", description="ignore unknown columns instead of 400"
    )
    registry_timeout_s: float = Field(
        5.0, validation_alias="REGISTRY_TIMEOUT_S", ge=0.1, allow_inf_nan=False, description="one registry call"
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", validation_alias="LOG_LEVEL", description="logging level"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def apply_mlflow_defaults(self) -> None:
        """MLflow's HTTP timeout follows REGISTRY_TIMEOUT_S (whole seconds, at least 1)."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, self.registry_timeout_s))))
        super().apply_mlflow_defaults()
