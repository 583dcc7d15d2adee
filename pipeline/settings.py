"""The pipeline's settings (train, bootstrap, promote, rollback), read from the environment in this one place.

The shared variables (MODEL_NAME, MODEL_ALIAS and the tracking URI order) come from ``common/settings.py``;
below are the pipeline's own. A bad value stops the command with one ``error:`` line naming the variable.

| variable              | default               | meaning                                                        |
|-----------------------|-----------------------|----------------------------------------------------------------|
| MLFLOW_ARTIFACT_ROOT  | mlruns/ (project)     | artifact location of new experiments on a database registry    |
| BOOTSTRAP_TIMEOUT_S   | 300                   | how long bootstrap waits for an unreachable registry           |
| BOOTSTRAP_TRAIN_ARGS  | (none: the defaults)  | `pipeline.main` options for the first-deploy training          |
| MLFLOW_RUN_ID         |                       | set by `mlflow run` for its child: the run to log into         |

``mlflow run`` always hands its child ``MLFLOW_TRACKING_URI`` = its own tracking URI, which is MLflow's built-in
default (``mlflow.db`` in the folder it was started from) when the user set none; the child cannot tell the two
apart (its shell even resets ``PWD``). So under ``mlflow run``, a store shaped like MLflow's default (a SQLite file
named ``mlflow.db``, or a ``mlruns`` folder) counts as unset when ``DATABASE_URL`` or ``MLFLOW_TRACKING_HOSTPORT``
names a registry: those apply, as they do everywhere else (see ``launcher_store``). To use such a file with
those variables set, run ``python -m pipeline.main`` instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, computed_field, field_validator

from common.backend import artifact_root
from common.settings import CommonSettings, SettingsError

__all__ = ["CHALLENGER", "PipelineSettings", "SettingsError", "load_settings", "mlflow_default_shaped"]

CHALLENGER = "challenger"  # the alias every newly registered version gets


def mlflow_default_shaped(uri: str) -> bool:
    """True for the stores MLflow uses when no tracking URI is set: ./mlflow.db (SQLite) or ./mlruns (files)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).name == "mlflow.db"
    if uri.startswith("file:"):
        return Path(urlparse(uri).path).name == "mlruns"
    return False


class PipelineSettings(CommonSettings):
    mlflow_artifact_root: str | None = Field(
        None,
        validation_alias="MLFLOW_ARTIFACT_ROOT",
        description="artifact location of new experiments on a database registry (default: mlruns/)",
    )
    bootstrap_timeout_s: float = Field(
        300.0,
        gt=0,
        allow_inf_nan=False,
        validation_alias="BOOTSTRAP_TIMEOUT_S",
        description="how long bootstrap waits for an unreachable registry",
    )
    bootstrap_train_args: str = Field(
        "",
        validation_alias="BOOTSTRAP_TRAIN_ARGS",
        description="`python -m pipeline.main` options for the first-deploy training, e.g. '--cv-repeats 1' for a "
        "quicker first champion on a small instance (a full training can follow with `mlflow run .`)",
    )
    mlflow_run_id: str | None = Field(
        None, validation_alias="MLFLOW_RUN_ID", description="set by `mlflow run` for its child: the run to log into"
    )

    @field_validator("model_alias")
    @classmethod
    def _not_the_challenger(cls, alias: str) -> str:
        # Every new version takes @challenger before the gate: gating and promoting that alias would compare a
        # version with itself and promote whatever was trained last.
        if alias == CHALLENGER:
            raise ValueError(f"must not be '{CHALLENGER}': the pipeline moves that alias to every new version")
        return alias

    @property
    def launcher_store(self) -> str | None:
        """The store `mlflow run` created its run in, when that is only MLflow's default and not a choice."""
        uri = self.mlflow_tracking_uri
        registry_named = self.database_url or self.mlflow_tracking_hostport
        if self.mlflow_run_id and uri and registry_named and mlflow_default_shaped(uri):
            return uri
        return None

    @computed_field(repr=False)  # type: ignore[prop-decorator]
    @property
    def tracking_uri(self) -> str:
        """common.settings' resolution, with `mlflow run`'s default store counted as unset."""
        if self.launcher_store is not None:
            return self.model_copy(update={"mlflow_tracking_uri": None}).tracking_uri
        return super().tracking_uri

    @property
    def rehomed(self) -> bool:
        """True when `mlflow run` put its run in a store other than the resolved one (the pipeline moves)."""
        return self.launcher_store is not None and self.launcher_store != self.tracking_uri

    def artifact_location(self, experiment: str) -> str:
        """Where a new experiment keeps its artifacts when the registry is a database."""
        return f"{artifact_root({'MLFLOW_ARTIFACT_ROOT': self.mlflow_artifact_root or ''})}/{experiment}"


def load_settings() -> PipelineSettings:
    """The settings from os.environ; a bad value ends the command with one `error:` line and exit status 2."""
    try:
        return PipelineSettings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
