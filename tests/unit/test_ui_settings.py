"""ui/settings.py: environment resolution, and the batch CSV validation that runs before anything is sent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from common.backend import DEFAULT_SQLITE_PATH
from ui import batch, i18n, scored, settings

ROOT = Path(__file__).resolve().parents[2]

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
    s = settings.load({"MODEL_NAME": "other", "UI_BATCH_CHUNK_ROWS": "50", "UI_CACHE_TTL_S": ""})
    assert (s.model_name, s.model_alias) == ("other", "champion")
    assert s.batch_chunk_rows == 50 and s.cache_ttl_s == 60  # an empty value (as Render writes it) is unset


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"UI_BATCH_CHUNK_ROWS": "-3"}, "UI_BATCH_CHUNK_ROWS"),
        ({"UI_CACHE_TTL_S": "x"}, "UI_CACHE_TTL_S"),
        ({"UI_API_TIMEOUT_S": "0"}, "UI_API_TIMEOUT_S"),
        ({"API_BASE_URL": "api.internal:8000"}, "API_BASE_URL"),  # no scheme
        ({"API_HOSTPORT": "http://api:8000"}, "API_HOSTPORT"),
        ({"MODEL_ALIAS": "champion!"}, "MODEL_ALIAS"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(env: dict[str, str], variable: str) -> None:
    """Issue 11: the app silently fell back to defaults where serving refused to start."""
    with pytest.raises(settings.SettingsError, match=variable) as err:
        settings.load(env)
    assert len(env[variable]) < 3 or env[variable] not in str(err.value)  # the rule, never the value


def test_settings_check_command_exits_1_on_a_bad_value() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UI_", "API_"))}
    bad = subprocess.run([sys.executable, "-m", "ui.settings"], env={**env, "UI_BATCH_CHUNK_ROWS": "0"},
                         cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 1 and "UI_BATCH_CHUNK_ROWS" in bad.stderr
    good = subprocess.run([sys.executable, "-m", "ui.settings"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert good.returncode == 0 and "UI_BATCH_CHUNK_ROWS" in good.stdout


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


def test_batch_duplicate_feature_columns_block_the_file() -> None:
    """`edad` and `Edad` (or ` edad`): which one is right cannot be guessed, so no row is scored."""
    for header in ("glucosa,edad,Edad", "glucosa,edad, edad", "glucosa,edad,edad"):
        check = batch.validate(batch.read_csv(f"{header}\n100,50,99\n".encode()), FEATURES)
        assert check.duplicate_columns == ["edad"], header
        assert [(p.row, p.field, p.rule) for p in check.problems] == [(0, "edad", "duplicate_column")]
        assert check.valid_index == [] and check.values["edad"].isna().all()
        assert check.unknown_columns == []
    # Also for a frame built elsewhere (pandas allows repeated labels).
    frame = pd.DataFrame([["100", "50", "99"]], columns=["glucosa", "edad", "edad"])
    assert batch.validate(frame, FEATURES).duplicate_columns == ["edad"]


def test_batch_blank_and_repeated_headers_get_unique_names() -> None:
    """Excel exports often end with empty header cells; repeated clinic columns must not break the download."""
    frame = batch.read_csv(b"glucosa,edad,id,id,,\n100,50,a,b,,x\n")
    check = batch.validate(frame, FEATURES)
    assert list(check.frame.columns) == ["glucosa", "edad", "id", "id_2", "columna_5", "columna_6"]
    assert check.renamed_columns == [("id", "id_2"), ("", "columna_5"), ("", "columna_6")]
    assert check.unknown_columns == ["id", "id_2", "columna_5", "columna_6"]
    assert check.duplicate_columns == [] and check.valid_index == [0]
    results = batch.score(check, lambda recs: {"predictions": [{"probability": 0.1, "label": 0}] * len(recs)}, 10)
    table, _ = scored.table(check, results, FEATURES, [], "en", scored.MACHINE)
    assert table.columns.is_unique and table["columna_6"].tolist() == ["x"]
    assert scored.to_csv(table, "en", scored.MACHINE).startswith(
        b"glucosa,edad,id,id_2,columna_5,columna_6,probability"
    )
    # A generated name never takes the name of a column the clinic already has.
    assert batch._unique_headers(["id", "id", "id_2", ""]) == ["id", "id_3", "id_2", "columna_4"]


def test_batch_csv_decoding() -> None:
    text = "glucosa;edad;nombre\n100;50;niña\n"
    for how, encoded in (
        ("utf-8", text.encode("utf-8")),
        ("utf-8 BOM", text.encode("utf-8-sig")),
        ("cp1252", text.encode("cp1252")),  # Excel's default "CSV" on Spanish Windows
        ("utf-16 LE BOM", text.encode("utf-16-le").join([b"\xff\xfe", b""])),  # Excel's "Unicode text"
        ("utf-16 BE BOM", b"\xfe\xff" + text.encode("utf-16-be")),
        ("utf-16 LE no BOM", text.encode("utf-16-le")),
        ("utf-16 BE no BOM", text.encode("utf-16-be")),
    ):
        frame = batch.read_csv(encoded)
        assert list(frame.columns) == ["glucosa", "edad", "nombre"], how
        assert frame["nombre"].tolist() == ["niña"], how
    # cp1252 leaves a few bytes undefined: unreadable, never replacement characters.
    try:
        batch.read_csv(b"glucosa,edad\n100,\x81\n")
    except UnicodeError:
        pass
    else:
        raise AssertionError("undefined bytes were decoded")
    try:
        batch.read_csv(b"PK\x03\x04\x00\x00\x08\x00glucosa")  # e.g. an .xlsx renamed .csv
    except ValueError:
        pass
    else:
        raise AssertionError("binary file was read as CSV")


def test_batch_empty_file_has_no_rows() -> None:
    for data in (b"", b"\n\n", b"\xef\xbb\xbf", b"glucosa,edad\n"):
        assert batch.read_csv(data).empty, data


def test_calibration_is_shown_in_words() -> None:
    assert i18n.calibration_name("none", "es") == "sin recalibrar"
    assert i18n.calibration_name("none", "en") == "no recalibration"
    assert i18n.calibration_name("sigmoid", "es") == "Platt (sigmoide)"
    assert i18n.calibration_name("isotonic", "en") == "isotonic"  # unknown code: as recorded


def test_model_card_text_names_no_population_or_feature() -> None:
    """The card's fixed text must fit any registered model: the population comes from the model's description."""
    for key in ("intended_use_text", "limits_text"):
        for lang in i18n.LANGS:
            text = i18n.tr(key, lang).lower()
            for word in ("mujer", "women", "woman", "21", "sog", "ogtt", "glucosa", "glucose", "hombres", "men "):
                assert word not in text, (key, lang, word)
