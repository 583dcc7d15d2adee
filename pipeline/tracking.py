"""The MLflow run a training logs into, in the store ``PipelineSettings.tracking_uri`` resolves.

- Started directly: a new run in the experiment (created on first use, artifacts under MLFLOW_ARTIFACT_ROOT).
- Started by ``mlflow run``: the run MLflow created for it (``MLFLOW_RUN_ID``), in the experiment MLflow chose.
- Started by ``mlflow run`` with no ``MLFLOW_TRACKING_URI`` while the registry is elsewhere (``DATABASE_URL``,
  ``MLFLOW_TRACKING_HOSTPORT``, or the project's SQLite when launched from another folder): MLflow has already
  created its run in its own default store (``./mlflow.db``), which the pipeline cannot change. The training
  then runs in the resolved store as a new run carrying the launcher run's project tags and parameters, and
  the launcher run gets a note pointing to it; both facts are printed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
from mlflow import ActiveRun, MlflowClient

from common.backend import is_tracking_server, redact
from pipeline.settings import PipelineSettings


def ensure_experiment(settings: PipelineSettings, name: str) -> None:
    client = MlflowClient(settings.tracking_uri)
    if client.get_experiment_by_name(name) is None:
        location = None if is_tracking_server(settings.tracking_uri) else settings.artifact_location(name)
        client.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)


def _leave_launcher(settings: PipelineSettings) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The launcher run's experiment name, tags and parameters; MLflow's fluent API stops pointing at it."""
    launcher = MlflowClient(settings.launcher_store)
    parent = launcher.get_run(str(settings.mlflow_run_id))
    experiment = launcher.get_experiment(parent.info.experiment_id).name
    # Otherwise mlflow.start_run() would try to resume that run id in the resolved store.
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        os.environ.pop(var, None)
    return experiment, dict(parent.data.tags), dict(parent.data.params)


def _point_launcher_to(settings: PipelineSettings, run_id: str) -> None:
    where = f"{redact(settings.tracking_uri)} as run {run_id}"
    MlflowClient(settings.launcher_store).set_tag(
        str(settings.mlflow_run_id),
        "mlflow.note.content",
        f"Launcher only: `mlflow run` put this run in MLflow's default store. The training ran in {where}.",
    )
    print(
        f"note: `mlflow run` recorded its launcher run in {settings.launcher_store} (MLflow's default; "
        f"MLFLOW_TRACKING_URI is not set); training and registry are in {where}",
        file=sys.stderr,
    )


@contextmanager
def training_run(settings: PipelineSettings, experiment: str) -> Iterator[ActiveRun]:
    """The active run the steps log into (see the module docstring for which one)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    if settings.mlflow_run_id and not settings.rehomed:
        with mlflow.start_run(run_id=settings.mlflow_run_id) as run:
            yield run
        return
    tags: dict[str, str] = {}
    params: dict[str, Any] = {}
    if settings.rehomed:
        experiment, tags, params = _leave_launcher(settings)
    ensure_experiment(settings, experiment)
    with mlflow.start_run(tags=tags) as run:
        mlflow.log_params(params)
        if settings.rehomed:
            _point_launcher_to(settings, run.info.run_id)
        yield run


def log_new_params(params: dict[str, Any]) -> None:
    """Log the params the active run does not have yet: `mlflow run` has already logged its own (as typed on
    its command line, e.g. min_auc=0.80), and MLflow refuses to log a key twice with another spelling."""
    run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    logged = MlflowClient().get_run(run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})
