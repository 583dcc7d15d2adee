"""Batch scoring end to end against a real registry: a clinic's model (categorical features, optional values) trained
by the pipeline, a clinic's raw export (its own column names) with a few invalid rows, scored by the local engine and
by Spark; every valid row equals the pyfunc's prediction, every invalid row keeps its reason and never its value."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from common import inference_db
from tests.conftest import FAST_TRAIN, ROOT, backend_env, run_pipeline
from tests.integration.test_pipeline_e2e import user_dataset

pytestmark = pytest.mark.slow
NAME = "clinic-risk"
URI = f"models:/{NAME}@champion"
RAW = {"edad": "age_years", "sexo": "sex", "imc": "bmi", "fumador": "smoker"}  # the config's column mapping
SECRET_AGE, SECRET_TEXT = "98765432", "SECRET"  # appear only in invalid cells: never in an output reason or a log
# (row, raw column, bad cell, expected reason)
BAD = [
    (5, "age_years", SECRET_AGE, "edad: must be between 18 and 100"),
    (17, "age_years", "45.5", "edad: must be a whole number"),
    (230, "age_years", "", "edad: is required"),
    (1001, "sex", "X", "sexo: must be one of ['F', 'M']"),
    (1500, "bmi", SECRET_TEXT, "imc: must be a number"),
    (2999, "smoker", "daily", "fumador: must be one of ['si', 'no', 'ex']"),
]
N = 3000


@pytest.fixture(scope="module")
def clinic() -> Iterator[dict]:
    work = Path(tempfile.mkdtemp(prefix="batch-"))
    env = backend_env(f"sqlite:///{work / 'mlflow.db'}", work / "artifacts")
    # The inference log the jobs record their summary row in: this test's own (never the project's .inference.db).
    env["APP_DATABASE_URL"] = f"sqlite:///{work / 'inference.db'}"
    env.pop("INFERENCE_LOG", None)
    inference_db.migrate(env["APP_DATABASE_URL"])
    config = user_dataset(work)
    proc = run_pipeline(env, *FAST_TRAIN, "--config", str(config), "--model-name", NAME, "--min-auc", "0.55")
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    raw, expected = population(np.random.default_rng(11), N)
    raw.to_csv(work / "export.csv", index=False)
    yield {"work": work, "env": env, "config": str(config), "raw": raw, "expected": expected}


def population(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A raw export (text cells, leading-zero ids, an unrelated column) and, per row, the pyfunc's prediction or
    the expected reason."""
    df = pd.DataFrame({
        "patient_id": [f"{i:07d}" for i in range(n)],
        "age_years": rng.integers(18, 101, n).astype(str),
        "sex": rng.choice(["F", "M"], n),
        "bmi": rng.normal(29, 6, n).round(1).clip(10, 80).astype(str),
        "smoker": rng.choice(["si", "no", "ex"], n).astype(object),
        "notes": "x",
    })  # fmt: skip
    df.loc[rng.random(n) < 0.25, "bmi"] = ""  # optional values left blank
    df.loc[rng.random(n) < 0.25, "smoker"] = ""
    valid = pd.DataFrame({
        "edad": df["age_years"].astype(float),
        "sexo": df["sex"],
        "imc": pd.to_numeric(df["bmi"].replace("", np.nan)),
        "fumador": df["smoker"].replace("", None),
    })  # fmt: skip
    out = mlflow.pyfunc.load_model(URI).predict(valid, params={"contributions": True})
    out["error"] = None
    for row, col, cell, reason in BAD:
        df.loc[row, col] = cell
        out.loc[row, "error"] = reason
    return df, out


def batch(clinic: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.batch", "--model-uri", URI, *args], cwd=ROOT,
                          env=clinic["env"], capture_output=True, text=True, timeout=timeout)  # fmt: skip


def assert_matches(out: pd.DataFrame, expected: pd.DataFrame, ids: pd.Series) -> None:
    assert out["patient_id"].tolist() == ids.tolist()  # passed through as text, in input order
    ok = expected["error"].isna().to_numpy()
    np.testing.assert_allclose(out["probability"][ok], expected["probability"][ok], rtol=0, atol=1e-9)
    assert out["label"][ok].astype(int).tolist() == expected["label"][ok].astype(int).tolist()
    assert out["risk_level"][ok].tolist() == expected["risk_level"][ok].tolist()
    assert out["error"][ok].isna().all()
    assert out["error"][~ok].tolist() == expected["error"][~ok].tolist()
    assert out[["probability", "label", "risk_level"]][~ok].isna().all().all()
    for name in RAW:
        if f"contrib_{name}" in out:
            np.testing.assert_allclose(out[f"contrib_{name}"][ok], expected[f"contrib_{name}"][ok], atol=1e-9)


def test_local_engine_scores_a_raw_export_through_the_config_mapping(clinic: dict) -> None:
    out_path = clinic["work"] / "scores.parquet"
    proc = batch(clinic, "--input", str(clinic["work"] / "export.csv"), "--output", str(out_path),
                 "--config", clinic["config"], "--id-columns", "patient_id", "--contributions", "true")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = pd.read_parquet(out_path)
    assert_matches(out, clinic["expected"], clinic["raw"]["patient_id"])
    version = str(MlflowClient().get_model_version_by_alias(NAME, "champion").version)
    assert set(out["model_name"]) == {NAME} and set(out["model_version"]) == {version}
    assert out["scored_at"].nunique() == 1
    logs = proc.stdout + proc.stderr
    assert SECRET_AGE not in logs and SECRET_TEXT not in logs and SECRET_TEXT not in out.to_string()

    run_id = proc.stdout.rsplit("[run ", 1)[1].split("]")[0]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model_version"] == version and run.data.params["output"] == str(out_path)
    m = run.data.metrics
    assert (m["rows_total"], m["rows_invalid"], m["rows_scored"]) == (N, len(BAD), N - len(BAD))
    assert m["invalid_rows/imc_must_be_a_number"] == 1 and m["rows_per_second"] > 0
    reasons = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="errors.json"))
                         .read_text())["reasons"]  # fmt: skip
    assert reasons == {reason: 1 for *_, reason in BAD}
    assert run.data.tags["inference_log"] == "recorded"
    (job,) = batch_jobs(clinic["env"]["APP_DATABASE_URL"], run_id)  # one summary row, not one per scored record
    assert (job["rows"], job["scored"], job["invalid"]) == (N, N - len(BAD), len(BAD))
    assert job["errors"] == reasons and job["status"] == "succeeded" and job["message"] is None
    assert (job["model_name"], job["model_version"], job["engine"], job["source"]) == (NAME, version, "local", "batch")
    assert job["input_uri"] == str(clinic["work"] / "export.csv") and job["output_uri"] == str(out_path)
    assert job["rows_per_second"] == pytest.approx(m["rows_per_second"]) and job["finished_at"] >= job["started_at"]
    assert SECRET_AGE not in json.dumps(job, default=str)


def test_folder_of_parts_and_glob_score_like_one_file(clinic: dict) -> None:
    """Parquet parts named by feature (no config), read in name order; a glob picks the same files."""
    from pipeline.batch.core import column_map, load_model
    from pipeline.batch.local import run_local

    parts = clinic["work"] / "parts"
    parts.mkdir()
    named = clinic["raw"].rename(columns={v: k for k, v in RAW.items()})
    for i, start in enumerate(range(0, N, 1100)):
        named.iloc[start : start + 1100].to_parquet(parts / f"part-{i:05d}.parquet", index=False)
    (parts / "_SUCCESS").write_text("")
    model = load_model(URI)
    for source in (str(parts), str(parts / "part-*.parquet")):
        target = clinic["work"] / f"parts-{len(source)}.csv"
        tally = run_local(model, column_map(model, None), source, str(target), ["patient_id"], False, 0.01)
        assert (tally.rows, tally.invalid) == (N, len(BAD))
        out = pd.read_csv(target, dtype={"patient_id": str})
        assert_matches(out, clinic["expected"], clinic["raw"]["patient_id"])


def batch_jobs(url: str, job_id: str | None = None) -> list[dict]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    table = inference_db.inference_batch_job
    q = sa.select(table).order_by(table.c.started_at)
    with engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(q if job_id is None else q.where(table.c.job_id == job_id))]
    engine.dispose()
    return out


def test_max_error_rate_stops_a_bad_file_with_a_one_line_summary(clinic: dict, postgres_url: str) -> None:
    """Also: both jobs, the failed and the passing one, leave their summary row in an inference log on Postgres."""
    bad = clinic["raw"].copy()
    bad.loc[2000:2099, "age_years"] = SECRET_AGE  # 100 more of 3000 rows out of range: 106 (3.53 %) invalid
    src, out_path = clinic["work"] / "bad.csv", clinic["work"] / "bad-scores.parquet"
    bad.to_csv(src, index=False)
    inference_db.migrate(inference_db.database_url({"APP_DATABASE_URL": postgres_url}))  # the API made the log
    clinic = {**clinic, "env": {**clinic["env"], "APP_DATABASE_URL": postgres_url}}
    proc = batch(clinic, "--input", str(src), "--output", str(out_path), "--config", clinic["config"])
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("batch scoring failed: 106 of 3000 rows invalid (3.53%): ")
    assert "edad: must be between 18 and 100 (101)" in last and "above max_error_rate 1.00%" in last
    assert SECRET_AGE not in proc.stderr + proc.stdout
    assert not out_path.exists() and not list(clinic["work"].glob(".bad-scores*"))
    # The same file passes with a looser limit.
    proc = batch(clinic, "--input", str(src), "--output", str(out_path), "--config", clinic["config"],
                 "--max-error-rate", "0.05")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pd.read_parquet(out_path)["error"].notna().sum() == 106
    failed, passed = batch_jobs(postgres_url)
    assert (failed["status"], passed["status"]) == ("failed", "succeeded")
    assert failed["message"] == last.removeprefix("batch scoring failed: ") and passed["message"] is None
    for job in (failed, passed):
        assert (job["rows"], job["invalid"], job["scored"]) == (3000, 106, 2894)
        assert job["errors"]["edad: must be between 18 and 100"] == 101 and job["started_at"].tzinfo is not None
    assert SECRET_AGE not in json.dumps([failed, passed], default=str)


def test_missing_required_column_is_refused_up_front(clinic: dict) -> None:
    src = clinic["work"] / "no-age.csv"
    clinic["raw"].drop(columns="age_years").to_csv(src, index=False)
    proc = batch(clinic, "--input", str(src), "--output", str(clinic["work"] / "x.parquet"), "--config",
                 clinic["config"])  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "batch scoring failed: input has no column age_years (feature edad)"


def test_mlflow_run_entry_point(clinic: dict) -> None:
    out_path = clinic["work"] / "mlflow-run.csv"
    proc = subprocess.run(
        ["mlflow", "run", ".", "--env-manager", "local", "-e", "batch", "-P", f"input={clinic['work'] / 'export.csv'}",
         "-P", f"output={out_path}", "-P", f"model_uri={URI}", "-P", "id_columns=patient_id",
         "-P", f"config={clinic['config']}"],
        cwd=ROOT, env=clinic["env"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = pd.read_csv(out_path, dtype={"patient_id": str})
    assert_matches(out, clinic["expected"], clinic["raw"]["patient_id"])


def test_spark_engine_gives_the_same_output(clinic: dict) -> None:
    pytest.importorskip("pyspark")
    out_path = clinic["work"] / "spark-scores"
    proc = batch(clinic, "--engine", "spark", "--input", str(clinic["work"] / "export.csv"), "--output",
                 str(out_path), "--config", clinic["config"], "--id-columns", "patient_id", "--contributions", "true",
                 timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    parts = sorted(out_path.glob("part-*.parquet"))
    assert parts
    out = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert_matches(out, clinic["expected"], clinic["raw"]["patient_id"])
    assert SECRET_AGE not in proc.stdout + proc.stderr and SECRET_TEXT not in proc.stdout + proc.stderr
    run = MlflowClient().get_run(proc.stdout.rsplit("[run ", 1)[1].split("]")[0])
    assert run.data.params["engine"] == "spark" and run.data.metrics["rows_invalid"] == len(BAD)
