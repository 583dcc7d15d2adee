"""A batch job's summary row in the inference log's database (table ``inference_batch_job``): one row per job —
never one per scored record, which live in the job's output — so the log accounts for batch scoring too.

Written only when the inference log exists: ``INFERENCE_LOG`` is not ``off`` and the database the API logs into
(``APP_DATABASE_URL``, else ``DATABASE_URL``, else the project's ``.inference.db``; common/inference_db.py) already
holds ``inference_log``. The schema is brought to the newest revision first (the same Alembic history the API
runs). A database that cannot be reached never fails a job: the MLflow run is the job's record, and the outcome
of this step is a tag on it (``inference_log``) and a line on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from common import inference_db
from common.backend import redact


@dataclass
class Job:
    job_id: str  # the job's MLflow run id
    started_at: datetime
    model_name: str
    model_version: str
    model_uri: str
    input_uri: str
    output_uri: str
    engine: str
    rows: int = 0
    invalid: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # "field: rule" → rows; never a value
    rows_per_second: float = 0.0
    status: str = "succeeded"
    message: str | None = None  # one line, no values (the job's own failure summary)

    def row(self, finished_at: datetime) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "started_at": self.started_at,
            "finished_at": finished_at,
            "status": self.status,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_uri": self.model_uri,
            "input_uri": redact(self.input_uri),  # a URI may carry a password (s3://key:secret@…)
            "output_uri": redact(self.output_uri),
            "engine": self.engine,
            "rows": self.rows,
            "scored": self.rows - self.invalid,
            "invalid": self.invalid,
            "errors": dict(self.errors),
            "rows_per_second": self.rows_per_second,
            "message": self.message,
            "source": "batch",
        }


def record(job: Job, finished_at: datetime, env: Mapping[str, str] | None = None) -> str:
    """Upsert the job's row (keyed by job id, so a retried write is harmless); returns what happened, for the
    run's tag: ``recorded``, ``skipped: …`` or ``not recorded: <error class>``."""
    env = os.environ if env is None else env
    if not inference_db.log_enabled(env):
        return "skipped: INFERENCE_LOG=off"
    url = inference_db.database_url(env)
    try:
        if not inference_db.has_log(url):
            return "skipped: no inference log in this database"
        inference_db.migrate(url)
        engine = inference_db.make_engine(url)
        try:
            _upsert(engine, job.row(finished_at))
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the log is secondary: a scored population must not fail for it
        print(f"note: batch job summary not written to the inference log ({type(exc).__name__})", file=sys.stderr)
        return f"not recorded: {type(exc).__name__}"
    return "recorded"


def _upsert(engine: sa.Engine, row: dict[str, Any]) -> None:
    table = inference_db.inference_batch_job
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).values(row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id"], set_={k: stmt.excluded[k] for k in row if k != "job_id"}
    )
    with engine.begin() as conn:
        conn.execute(stmt)
