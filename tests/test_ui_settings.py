"""ui/settings.py: environment resolution, and the batch CSV validation that runs before anything is sent."""

from __future__ import annotations

import pandas as pd

from common.backend import DEFAULT_SQLITE_PATH
from ui import batch, settings

FEATURES = [
    {"name": "glucosa", "type": "numeric", "integer": False, "min": 40, "max": 400, "optional": False},
    {"name": "edad", "type": "numeric", "integer": True, "min": 21, "max": 100, "optional": False},
    {"name": "imc", "type": "numeric", "integer": False, "min": 12, "max": 70, "optional": True},
]


def test_api_base_url_order() -> None:
    assert settings.load({}).api_base_url == "http://127.0.0.1:8002"
    assert settings.load({"API_HOSTPORT": "api:8000"}).api_base_url == "http://api:8000"
    env = {"API_HOSTPORT": "api:8000", "API_BASE_URL": "https://x.example/"}
    assert settings.load(env).api_base_url == "https://x.example"


def test_tracking_uri_order() -> None:
    assert settings.load({}).tracking_uri == f"sqlite:///{DEFAULT_SQLITE_PATH}"
    assert settings.load({"MLFLOW_TRACKING_HOSTPORT": "mlflow:5000"}).tracking_uri == "http://mlflow:5000"
    env = {"MLFLOW_TRACKING_HOSTPORT": "mlflow:5000", "MLFLOW_TRACKING_URI": "postgres://u@h/db"}
    assert settings.load(env).tracking_uri == "postgresql+psycopg2://u@h/db"


def test_model_name_and_numbers() -> None:
    s = settings.load({"MODEL_NAME": "other", "UI_BATCH_CHUNK_ROWS": "-3", "UI_CACHE_TTL_S": "x"})
    assert (s.model_name, s.model_alias) == ("other", "champion")
    assert s.batch_chunk_rows == 200 and s.cache_ttl_s == 60  # bad values fall back to the defaults


def test_batch_validation_rules() -> None:
    csv = "Glucosa;edad;id\n148;50;a\n500;50;b\n;50;c\n120,5;33,5;d\nx;40;e\n"
    check = batch.validate(batch.read_csv(csv.encode()), FEATURES)
    assert check.missing_columns == [] and check.unknown_columns == ["id"]
    assert [(p.row, p.field, p.rule) for p in check.problems] == [
        (2, "glucosa", "out_of_range"),
        (3, "glucosa", "required"),
        (4, "edad", "not_integer"),
        (5, "glucosa", "not_number"),
    ]
    assert check.valid_index == [0]
    assert check.values["glucosa"].iloc[3] == 120.5  # decimal comma
    assert batch.records(check.values, [0]) == [{"glucosa": 148.0, "edad": 50.0}]  # imc absent: not measured


def test_batch_missing_required_column() -> None:
    check = batch.validate(pd.DataFrame({"edad": ["50"]}), FEATURES)
    assert check.missing_columns == ["glucosa"] and check.valid_index == []


def test_batch_csv_extra_fields_never_shift_values() -> None:
    """A row with one value too many is flagged, not scored with its values moved one column over; a trailing
    empty field (a common spreadsheet export) is harmless."""
    frame = batch.read_csv(b"glucosa,edad\n100,50\n100,150,60\n120,40,\n")
    assert frame["glucosa"].tolist() == ["100", "100", "120"]
    assert frame["edad"].tolist() == ["50", "150", "40"]
    features = [{"name": "glucosa", "min": 40, "max": 400}, {"name": "edad", "min": 21, "max": 100, "integer": True}]
    check = batch.validate(frame, features)
    assert [(p.row, p.rule) for p in check.problems if p.rule == "extra_fields"] == [(2, "extra_fields")]
    assert check.valid_index == [0, 2]
    semicolons = batch.read_csv(b'glucosa;edad\n"1,5";40\n')
    assert semicolons.iloc[0].tolist() == ["1,5", "40"]
