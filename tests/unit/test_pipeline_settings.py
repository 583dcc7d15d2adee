"""The pipeline's settings: typed, failing fast in one `error:` line naming the variable, and the registry found
in the same order as everywhere else — also when `mlflow run` hands its child MLflow's default store."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import DEFAULT_MODEL_ALIAS, DEFAULT_MODEL_NAME
from pipeline import bootstrap, main, registry
from pipeline.settings import PipelineSettings, SettingsError

PG = "postgres://u:secret@db:5432/reg"
PG_SQLALCHEMY = "postgresql+psycopg2://u:secret@db:5432/reg"


def test_defaults_come_from_common_settings() -> None:
    s = PipelineSettings.from_env({})
    assert (s.model_name, s.model_alias) == (DEFAULT_MODEL_NAME, DEFAULT_MODEL_ALIAS)
    assert s.tracking_uri.endswith("/mlflow.db") and s.bootstrap_timeout_s == 300
    assert PipelineSettings.from_env({"DATABASE_URL": PG}).tracking_uri == PG_SQLALCHEMY
    assert PipelineSettings.from_env({"MLFLOW_ARTIFACT_ROOT": "file:///a"}).artifact_location("x") == "file:///a/x"


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"MODEL_ALIAS": "challenger"}, "MODEL_ALIAS"),
        ({"MODEL_ALIAS": "my alias"}, "MODEL_ALIAS"),
        ({"BOOTSTRAP_TIMEOUT_S": "soon"}, "BOOTSTRAP_TIMEOUT_S"),
        ({"BOOTSTRAP_TIMEOUT_S": "0"}, "BOOTSTRAP_TIMEOUT_S"),
        ({"BOOTSTRAP_TIMEOUT_S": "inf"}, "BOOTSTRAP_TIMEOUT_S"),
        ({"MLFLOW_TRACKING_HOSTPORT": "http://mlflow:5000"}, "MLFLOW_TRACKING_HOSTPORT"),
    ],
)
def test_bad_value_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}: "):
        PipelineSettings.from_env(env)


@pytest.mark.parametrize(
    "entry",
    [lambda: main.main([]), lambda: registry.main(["rollback"]), bootstrap.main],
    ids=["main", "registry", "bootstrap"],
)
def test_every_entry_point_stops_with_one_error_line(
    entry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("BOOTSTRAP_TIMEOUT_S", "soon")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:hunter2@db/reg")
    with pytest.raises(SystemExit) as exit_:
        entry()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: BOOTSTRAP_TIMEOUT_S: ")
    assert "hunter2" not in err[0]


def launched_by_mlflow_run(store: str, **env: str) -> dict[str, str]:
    return {"MLFLOW_RUN_ID": "0123abcd", "MLFLOW_TRACKING_URI": store, **env}


def test_mlflow_runs_default_store_counts_as_unset(tmp_path: Path) -> None:
    default = f"sqlite:///{tmp_path / 'mlflow.db'}"  # what `mlflow run` passes on when nothing is set
    s = PipelineSettings.from_env(launched_by_mlflow_run(default, DATABASE_URL=PG))
    assert s.tracking_uri == PG_SQLALCHEMY and s.launcher_store == default and s.rehomed
    hostport = PipelineSettings.from_env(launched_by_mlflow_run(default, MLFLOW_TRACKING_HOSTPORT="m:5000"))
    assert hostport.tracking_uri == "http://m:5000" and hostport.rehomed
    files = PipelineSettings.from_env(launched_by_mlflow_run((tmp_path / "mlruns").as_uri(), DATABASE_URL=PG))
    assert files.tracking_uri == PG_SQLALCHEMY and files.rehomed


def test_a_chosen_tracking_uri_still_wins(tmp_path: Path) -> None:
    chosen = f"sqlite:///{tmp_path / 'registry.db'}"
    s = PipelineSettings.from_env(launched_by_mlflow_run(chosen, DATABASE_URL=PG))
    assert s.tracking_uri == chosen and s.launcher_store is None and not s.rehomed
    # With no registry variable, MLflow's default store is used as it is (no second store to prefer).
    plain = PipelineSettings.from_env(launched_by_mlflow_run(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert plain.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}" and not plain.rehomed
    # Not launched by `mlflow run`: MLFLOW_TRACKING_URI is always the user's choice.
    direct = PipelineSettings.from_env(
        {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "DATABASE_URL": PG}
    )
    assert direct.tracking_uri.endswith("/mlflow.db") and not direct.rehomed
