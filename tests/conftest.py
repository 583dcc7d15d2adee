"""Shared fixtures: throwaway registries on SQLite and on the real Postgres at 127.0.0.1:5432.

Tests are filed by kind: ``tests/unit`` (in-process), ``tests/integration`` (real servers, subprocesses, Postgres)
and ``tests/e2e`` (a real browser). Each test gets its folder's marker; integration and e2e tests are also
``slow``, as is any unit test marked so, and ``-m "not slow"`` is the fast tier.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A realistic patient for the bundled data (the first woman of Pima.te); tests that must not depend on the bundled
# features fill any other feature with its range midpoint.
EXAMPLE_PATIENT = {
    "embarazos": 6,
    "glucosa": 148,
    "presion_diastolica": 72,
    "pliegue_triceps": 35,
    "imc": 33.6,
    "pedigri_diabetes": 0.627,
    "edad": 50,
}


KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        kind = next((k for k in KINDS if f"{os.sep}tests{os.sep}{k}{os.sep}" in str(item.path)), None)
        if kind:
            item.add_marker(kind)
        if kind in ("integration", "e2e"):
            item.add_marker("slow")


def example_patient(features: list[dict]) -> dict[str, float | int]:
    """EXAMPLE_PATIENT for the served spec: other features get their range midpoint, whole numbers stay whole."""
    out: dict[str, float | int] = {}
    for f in features:
        value = EXAMPLE_PATIENT.get(f["name"], (f["min"] + f["max"]) / 2)
        out[f["name"]] = int(round(value)) if f.get("integer") else float(value)
    return out


# Training options for tests where the model is incidental (a real registered model, not the best one): no
# hyperparameter search, no recalibration, 3 folds. Model selection itself is tested in-process
# (tests/integration/test_model_training.py) and the full default training runs in the deployment smoke test.
FAST_TRAIN = ("--cv-repeats", "1", "--cv-folds", "3", "--family", "logistic", "--C", "1", "--calibration", "none")

PG_ADMIN_DSN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def backend_env(tracking_uri: str, artifacts: Path) -> dict[str, str]:
    """A child-process environment that talks only to the given registry."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DATABASE_URL", "MLFLOW_RUN_ID")}
    env.update(
        {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_ARTIFACT_ROOT": artifacts.as_uri(), "PYTHONPATH": str(ROOT)}
    )
    # Child processes (and the `python` that `mlflow run` invokes) use this interpreter's environment.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_pipeline(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return backend_env(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")


def _pg_connect(dsn: str):
    import psycopg2

    return psycopg2.connect(dsn, connect_timeout=5)


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty Postgres database, dropped afterwards. In CI a missing Postgres fails the test."""
    try:
        admin = _pg_connect(PG_ADMIN_DSN)
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no Postgres here"
        if os.environ.get("CI") == "true":
            pytest.fail(f"Postgres at 127.0.0.1:5432 is required in CI: {exc}")
        pytest.skip(f"Postgres not reachable: {exc}")
    admin.autocommit = True
    name = f"test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
