"""Typed settings: one tracking-URI resolution and one set of model defaults (common/), fail fast naming the
variable and the rule, documented in one table."""

from __future__ import annotations

import pytest

from common.settings import DEFAULT_MODEL_ALIAS, DEFAULT_MODEL_NAME, CommonSettings, SettingsError, settings_table
from serving.settings import Settings


def test_defaults_and_tracking_uri_order() -> None:
    s = Settings.from_env({})
    assert (s.model_name, s.model_alias) == (DEFAULT_MODEL_NAME, DEFAULT_MODEL_ALIAS)
    assert s.tracking_uri.startswith("sqlite:///") and s.tracking_uri.endswith("/mlflow.db")
    db = {"DATABASE_URL": "postgres://u:secret@h/db"}
    assert Settings.from_env(db).tracking_uri == "postgresql+psycopg2://u:secret@h/db"
    assert Settings.from_env({**db, "MLFLOW_TRACKING_HOSTPORT": "mlflow:5000"}).tracking_uri == "http://mlflow:5000"
    both = {**db, "MLFLOW_TRACKING_HOSTPORT": "mlflow:5000", "MLFLOW_TRACKING_URI": "http://x:1"}
    assert Settings.from_env(both).tracking_uri == "http://x:1"


def test_empty_values_mean_default_and_a_given_mapping_is_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "1234")
    assert Settings.from_env().port == 1234
    assert Settings.from_env({}).port == 8002  # os.environ does not leak into an explicit mapping
    assert Settings.from_env({"PORT": "", "MODEL_NAME": ""}).model_name == DEFAULT_MODEL_NAME


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "0"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"MAX_ROWS": "1.5"}, "MAX_ROWS"),
        ({"REQUEST_TIMEOUT_S": "0"}, "REQUEST_TIMEOUT_S"),
        ({"REQUEST_TIMEOUT_S": "nan"}, "REQUEST_TIMEOUT_S"),
        ({"MAX_COLUMNS": "0"}, "MAX_COLUMNS"),
        ({"MAX_VALUE_CHARS": "many"}, "MAX_VALUE_CHARS"),
        ({"MAX_DECODED_BYTES": "-1"}, "MAX_DECODED_BYTES"),
        ({"BODY_READ_TIMEOUT_S": "0"}, "BODY_READ_TIMEOUT_S"),
        ({"BODY_READ_TIMEOUT_S": "inf"}, "BODY_READ_TIMEOUT_S"),
        ({"KEEPALIVE_TIMEOUT_S": "nan"}, "KEEPALIVE_TIMEOUT_S"),
        ({"MAX_CONNECTIONS": "0"}, "MAX_CONNECTIONS"),
        ({"RELOAD_INTERVAL_S": "-1"}, "RELOAD_INTERVAL_S"),
        ({"ALLOW_EXTRA_COLUMNS": "maybe"}, "ALLOW_EXTRA_COLUMNS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"MODEL_ALIAS": "a b"}, "MODEL_ALIAS"),
        ({"MLFLOW_TRACKING_HOSTPORT": "http://x"}, "MLFLOW_TRACKING_HOSTPORT"),
    ],
)
def test_bad_value_fails_naming_variable_and_rule(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    message = str(err.value)
    assert message.startswith(f"{variable}: ")
    assert len(message) > len(variable) + 10  # the rule follows the name


def test_secrets_stay_out_of_errors_and_repr() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"DATABASE_URL": "postgres://u:hunter2@h/db", "PORT": "x"})
    assert "hunter2" not in str(err.value)
    assert "hunter2" not in repr(Settings.from_env({"DATABASE_URL": "postgres://u:hunter2@h/db"}))


def test_base_class_is_reusable_and_documented() -> None:
    class Other(CommonSettings):
        pass

    assert Other.from_env({"MODEL_ALIAS": "challenger"}).model_alias == "challenger"
    table = settings_table(Settings)
    limits = ("MAX_COLUMNS", "MAX_VALUE_CHARS", "MAX_DECODED_BYTES", "BODY_READ_TIMEOUT_S", "KEEPALIVE_TIMEOUT_S")
    for var in ("MODEL_NAME", "PORT", "WEB_CONCURRENCY", "REGISTRY_TIMEOUT_S", "LOG_LEVEL", *limits, "MAX_CONNECTIONS"):
        assert f"| {var} |" in table
