"""The inference log's database: every scored row (``inference_log``), the outcomes confirmed later
(``inference_outcome``) and one summary row per batch scoring job (``inference_batch_job``).

Shared here because three parts write or read it without importing each other: the API (serving/) logs
predictions and outcomes, the batch job (pipeline/batch/) records its jobs, the monitor job and the app's
monitoring page read it.

Which database: ``APP_DATABASE_URL``, else ``DATABASE_URL``, else a git-ignored SQLite file in the project
(``.inference.db``). The schema is owned by Alembic (``common/inference_migrations``) with its OWN version
table, ``inference_alembic_version``, so other parts of the API can keep their own migration history in the
same database without the two fighting over the default ``alembic_version`` row.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from common.backend import PROJECT_ROOT, normalize_database_url

DEFAULT_SQLITE_PATH = PROJECT_ROOT / ".inference.db"
VERSION_TABLE = "inference_alembic_version"
MIGRATIONS = Path(__file__).with_name("inference_migrations")

# Interfaces other tools rely on (issue 9): table and column names are fixed.
SOURCES = ("api", "app-individual", "app-batch", "batch")
TESTS = ("hba1c", "fasting_glucose", "ogtt")

metadata = sa.MetaData()
_json = sa.JSON().with_variant(JSONB(), "postgresql")

inference_log = sa.Table(
    "inference_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("row", sa.Integer, nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("route", sa.String(32), nullable=False),
    sa.Column("caller", sa.String(200), nullable=False),
    sa.Column("features", _json, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("label", sa.SmallInteger, nullable=False),
    sa.Column("risk_level", sa.String(32), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.UniqueConstraint("request_id", "row", name="uq_inference_log_request_row"),
)

inference_outcome = sa.Table(
    "inference_outcome",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("row", sa.Integer, primary_key=True),
    sa.Column("diabetes", sa.Boolean, nullable=False),
    sa.Column("test", sa.String(32), nullable=False),
    sa.Column("test_date", sa.Date, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("caller", sa.String(200), nullable=False),
)

# One row per batch scoring job (pipeline/batch), never one per scored record: those are in the job's output.
BATCH_STATUSES = ("succeeded", "failed")
inference_batch_job = sa.Table(
    "inference_batch_job",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),  # the job's MLflow run id
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("model_uri", sa.Text, nullable=False),
    sa.Column("input_uri", sa.Text, nullable=False),
    sa.Column("output_uri", sa.Text, nullable=False),
    sa.Column("engine", sa.String(16), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("scored", sa.BigInteger, nullable=False),
    sa.Column("invalid", sa.BigInteger, nullable=False),
    sa.Column("errors", _json, nullable=False),  # {"field: rule": rows}; never a value
    sa.Column("rows_per_second", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=True),  # why a failed job failed (one line, no values)
    sa.Column("source", sa.String(16), nullable=False),  # "batch", as in inference_log.source
)


def log_enabled(env: Mapping[str, str] | None = None) -> bool:
    """``INFERENCE_LOG`` (default on): off, 0, false or no disables the log everywhere."""
    env = os.environ if env is None else env
    return (env.get("INFERENCE_LOG") or "on").strip().lower() not in ("off", "0", "false", "no")


def database_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    url = env.get("APP_DATABASE_URL") or env.get("DATABASE_URL")
    return normalize_database_url(url) if url else f"sqlite:///{DEFAULT_SQLITE_PATH}"


def make_engine(url: str, *, read_only: bool = False, connect_timeout_s: int = 3, **kw: Any) -> sa.Engine:
    """An engine that gives up quickly when the database is unreachable (the writer spools instead of
    waiting), and, when ``read_only``, cannot write (the monitoring page)."""
    if url.startswith("sqlite"):
        if read_only:
            path = url.split("///", 1)[1]
            return sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", **kw)
        return sa.create_engine(url, connect_args={"timeout": connect_timeout_s}, **kw)
    args: dict[str, Any] = {"connect_timeout": connect_timeout_s}
    if read_only:
        args["options"] = "-c default_transaction_read_only=on"
    kw.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, connect_args=args, **kw)


_migrating = threading.Lock()


def has_log(url: str) -> bool:
    """Whether this database holds the inference log (the API or the monitor job created it). Never creates
    anything: a SQLite file that does not exist is not opened (connecting would create it)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if not path or path == ":memory:" or not Path(path).is_file():
            return False
    engine = make_engine(url)
    try:
        return sa.inspect(engine).has_table("inference_log")
    finally:
        engine.dispose()


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (idempotent; run at API start and before the first write).
    One at a time per process: Alembic's ``context`` is module-global, so concurrent runs in threads collide."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    with _migrating:
        command.upgrade(cfg, "head")
