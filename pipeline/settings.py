"""The pipeline's settings (train, bootstrap, promote, rollback), read from the environment in this one place.

The shared variables (MODEL_NAME, MODEL_ALIAS and the tracking URI order) come from ``common/settings.py``;
below are the pipeline's own. A bad value stops the command with one ``error:`` line naming the variable.

| variable              | default               | meaning                                                        |
|-----------------------|-----------------------|----------------------------------------------------------------|
| MLFLOW_ARTIFACT_ROOT  | mlruns/ (project)     | artifact location of new experiments on a database registry    |
| BOOTSTRAP_TIMEOUT_S   | 300                   | how long bootstrap waits for an unreachable registry           |
| MLFLOW_RUN_ID         |                       | set by `mlflow run` for its child: the run to log into         |
| PWD                   |                       | set by the shell: where `mlflow run` was started               |

``mlflow run`` always hands its child ``MLFLOW_TRACKING_URI`` = its own tracking URI, which is MLflow's built-in
default (``./mlflow.db`` where it was started) when the user set none. That value is not the user's choice, so
it counts as unset: ``MLFLOW_TRACKING_HOSTPORT``, ``DATABASE_URL`` and the project's SQLite still apply, as
they do everywhere else (see ``launcher_store``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field, computed_field, field_validator

from common.backend import artifact_root
from common.settings import CommonSettings, SettingsError

__all__ = ["CHALLENGER", "PipelineSettings", "SettingsError", "load_settings", "mlflow_default_stores"]

CHALLENGER = "challenger"  # the alias every newly registered version gets


def mlflow_default_stores(directory: Path) -> set[str]:
    """The tracking URIs MLflow uses when none is set and it was started in ``directory``."""
    directory = directory.resolve()
    return {f"sqlite:///{directory / 'mlflow.db'}", (directory / "mlruns").as_uri()}


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
    mlflow_run_id: str | None = Field(
        None, validation_alias="MLFLOW_RUN_ID", description="set by `mlflow run` for its child: the run to log into"
    )
    launch_dir: str | None = Field(
        None, validation_alias="PWD", description="set by the shell: where `mlflow run` was started"
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
        if not (self.mlflow_run_id and uri):
            return None
        dirs = {Path.cwd(), *([Path(self.launch_dir)] if self.launch_dir else [])}
        return uri if any(uri in mlflow_default_stores(d) for d in dirs) else None

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
