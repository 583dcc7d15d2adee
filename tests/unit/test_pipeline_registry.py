"""Promote and roll back on a real SQLite registry: the alias is MODEL_ALIAS, and rollback walks back through
every earlier version of that alias (v4 → v3 → v2 → v1), then says there is nothing left."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline import registry

NAME = "diabetes-t2"


@pytest.fixture(scope="module")
def registry_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite registry for the module (creating MLflow's tables takes seconds); one model per test."""
    path = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{path / 'registry.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
    return uri


@pytest.fixture
def client(registry_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A fresh registered model NAME with versions 1-4, and the environment the CLI reads pointing at it."""
    for var in ("MLFLOW_TRACKING_HOSTPORT", "DATABASE_URL", "MLFLOW_RUN_ID", "MODEL_NAME", "MODEL_ALIAS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_uri)
    c = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
    if c.search_registered_models(f"name = '{NAME}'"):
        c.delete_registered_model(NAME)
    c.create_registered_model(NAME)
    for _ in range(4):
        c.create_model_version(NAME, tmp_path.as_uri())
    return c


def served(client: MlflowClient, alias: str = "champion") -> str | None:
    return registry.alias_version(client, NAME, alias)


def cli(*argv: str) -> int:
    return registry.main(list(argv))


def test_rollback_walks_back_one_champion_per_call(client: MlflowClient, capsys: pytest.CaptureFixture) -> None:
    for v in ("1", "2", "3", "4"):
        assert cli("promote", "--version", v) == 0
    assert client.get_registered_model(NAME).tags["champion_history"] == "1,2,3"
    for expected in ("3", "2", "1"):
        assert cli("rollback") == 0
        assert served(client) == expected
        assert f"{NAME}@champion rolled back to version {expected}" in capsys.readouterr().out
    assert cli("rollback") == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: nothing to roll back to: {NAME}@champion is v1 and no earlier version is recorded"
    assert served(client) == "1"


def test_promote_after_rollback_keeps_walking_back(client: MlflowClient) -> None:
    for v in ("1", "2", "3"):
        registry.promote(client, NAME, v, "champion")
    assert registry.rollback(client, NAME, "champion") == "2"
    registry.promote(client, NAME, "4", "champion")
    assert [registry.rollback(client, NAME, "champion") for _ in range(2)] == ["2", "1"]
    registry.promote(client, NAME, "1", "champion")  # already served: no history entry
    with pytest.raises(registry.NothingToRollBack):
        registry.rollback(client, NAME, "champion")


def test_rollback_skips_deleted_versions(client: MlflowClient) -> None:
    for v in ("1", "2", "3"):
        registry.promote(client, NAME, v, "champion")
    client.delete_model_version(NAME, "2")
    assert registry.rollback(client, NAME, "champion") == "1"


def test_model_alias_is_the_alias_promoted_and_rolled_back(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_ALIAS", "production")
    assert cli("promote", "--version", "1") == 0 and cli("promote", "--version", "2") == 0
    assert served(client, "production") == "2" and served(client) is None
    assert cli("rollback") == 0
    assert served(client, "production") == "1" and served(client) is None
    assert client.get_registered_model(NAME).tags["production_history"] == ""


def test_gate_and_promote_moves_model_alias_only(client: MlflowClient) -> None:
    import numpy as np
    import pandas as pd

    mv = client.get_model_version(NAME, "1")
    rule = registry.GateRule(min_auc=0.8)
    result = registry.gate_and_promote(client, mv, "production", 0.9, pd.DataFrame(), np.array([]), rule)
    assert result.passed and result.reasons == ["no current production"]
    assert served(client, "production") == "1" and served(client) is None
    assert client.get_model_version(NAME, "1").tags["gate"] == "passed"
    low = registry.gate_and_promote(client, client.get_model_version(NAME, "2"), "production", 0.7,
                                    pd.DataFrame(), np.array([]), rule)  # fmt: skip
    assert not low.passed and served(client, "production") == "1"


def test_registry_written_before_histories_rolls_back_once(client: MlflowClient) -> None:
    registry.promote(client, NAME, "2", "champion")
    client.set_registered_model_tag(NAME, registry.LEGACY_PREVIOUS_TAG, "1")
    assert registry.rollback(client, NAME, "champion") == "1"
    with pytest.raises(registry.NothingToRollBack):
        registry.rollback(client, NAME, "champion")


def test_bad_settings_and_arguments_fail_in_one_line(client: MlflowClient, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MODEL_ALIAS", "challenger")
    with pytest.raises(SystemExit) as exit_:
        cli("rollback")
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: MODEL_ALIAS: ") and "challenger" in err[0]
    monkeypatch.delenv("MODEL_ALIAS")
    assert cli("promote", "--version", "99") == 2
    assert capsys.readouterr().err.startswith("error: ")
