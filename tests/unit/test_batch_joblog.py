"""A batch job's summary row in the inference log's database (pipeline/batch/joblog.py), on SQLite: written only
where the log exists, migrated from an older schema, one row per job however often it is written, and counted by
the monitor job. The same path on the real Postgres runs in tests/integration/test_batch.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from common import inference_db
from monitor.job import batch_jobs
from pipeline.batch import joblog

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def job(job_id: str = "a" * 32, version: str = "3", **kw: object) -> joblog.Job:
    j = joblog.Job(job_id, T0, "diabetes-t2", version, f"models:/diabetes-t2/{version}",
                   "s3://user:secret@bucket/register/*.parquet", "/data/scores.parquet", "local")  # fmt: skip
    j.rows, j.invalid, j.errors, j.rows_per_second = 1000, 3, {"edad: is required": 2, "imc: must be a number": 1}, 5e4
    for k, v in kw.items():
        setattr(j, k, v)
    return j


def rows(url: str) -> list[dict]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(sa.select(inference_db.inference_batch_job))]
    engine.dispose()
    return out


def test_no_log_no_row_and_no_file(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    env = {"APP_DATABASE_URL": f"sqlite:///{path}"}
    assert joblog.record(job(), T0, env) == "skipped: no inference log in this database"
    assert not path.exists()  # looking did not create the database
    assert joblog.record(job(), T0, {**env, "INFERENCE_LOG": "off"}) == "skipped: INFERENCE_LOG=off"


def test_a_log_of_the_first_schema_is_migrated_and_gets_one_row_per_job(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'log.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(inference_db.MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0001_inference_log")  # the log as an API of the previous release left it
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:9/x", "APP_DATABASE_URL": url}  # APP_ first, as the API
    finished = T0 + timedelta(seconds=30)
    assert joblog.record(job(), finished, env) == "recorded"
    assert joblog.record(job(), finished, env) == "recorded"  # written twice (a retry): still one row
    (row,) = rows(url)
    assert row["job_id"] == "a" * 32 and row["status"] == "succeeded" and row["source"] == "batch"
    assert (row["rows"], row["scored"], row["invalid"]) == (1000, 997, 3)
    assert row["errors"] == {"edad: is required": 2, "imc: must be a number": 1}
    assert row["input_uri"] == "s3://user:***@bucket/register/*.parquet"  # never a password
    assert row["model_version"] == "3" and row["engine"] == "local" and row["rows_per_second"] == 5e4
    assert row["finished_at"].replace(tzinfo=UTC) - row["started_at"].replace(tzinfo=UTC) == timedelta(seconds=30)
    failed = job("b" * 32, status="failed", message="106 of 3000 rows invalid (3.53%): edad: must be …")
    assert joblog.record(failed, finished, env) == "recorded"
    assert {r["job_id"]: r["status"] for r in rows(url)} == {"a" * 32: "succeeded", "b" * 32: "failed"}


def test_an_unreachable_database_never_fails_the_job(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"APP_DATABASE_URL": "postgresql://postgres:pw@127.0.0.1:9/nothing"}  # nothing listens on port 9
    assert joblog.record(job(), T0, env) == "not recorded: OperationalError"
    err = capsys.readouterr().err
    assert "batch job summary not written to the inference log (OperationalError)" in err and "pw" not in err


def test_the_monitor_counts_one_versions_jobs_in_its_window(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    inference_db.migrate(url)
    env = {"APP_DATABASE_URL": url}
    for i, (version, started) in enumerate([("3", T0), ("3", T0 + timedelta(days=2)), ("4", T0),
                                            ("3", T0 - timedelta(days=40))]):  # fmt: skip
        assert joblog.record(job(f"job{i}", version, started_at=started), started, env) == "recorded"
    engine = inference_db.make_engine(url)
    try:
        counts = batch_jobs(engine, "diabetes-t2", "3", T0 - timedelta(days=30))
    finally:
        engine.dispose()
    assert counts == {"batch_job_count": 2, "batch_rows_total": 2000, "batch_rows_scored": 1994}
