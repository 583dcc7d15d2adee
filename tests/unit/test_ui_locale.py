"""The app's input rules and its numbers in the clinician's language (pure functions, no servers)."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from pipeline.registry import GateResult
from ui import batch, components, rules, scored, spec
from ui.i18n import tr

AGE = {"name": "edad", "type": "numeric", "integer": True, "min": 21, "max": 100, "unit": "años", "optional": False}
GLUCOSE = {"name": "glucosa", "type": "numeric", "min": 40, "max": 400, "unit": "mg/dL", "optional": False}
BMI = {"name": "imc", "type": "numeric", "min": 12, "max": 70, "optional": True}
PEDIGREE = {"name": "pedigri", "type": "numeric", "min": 0.05, "max": 2.5, "optional": False}
SEX = {"name": "sexo", "type": "categorical", "categories": ["F", "M"], "optional": False}
BANDS = [
    {"name": "low", "upper": 0.2, "label": {"es": "Bajo", "en": "Low"}},
    {"name": "high", "upper": 1.0, "label": {"es": "Alto", "en": "High"}},
]


@pytest.mark.parametrize(
    ("text", "value"),
    [("33,6", 33.6), ("33.6", 33.6), (" 50 ", 50.0), ("0,627", 0.627), ("1.000,5", None), ("1,2,3", None),
     ("abc", None), ("inf", None), ("nan", None), ("", None)],
)  # fmt: skip
def test_a_decimal_comma_is_a_decimal_separator(text: str, value: float | None) -> None:
    assert rules.parse_number(text) == value


@pytest.mark.parametrize(
    ("feature", "raw", "expected"),
    [
        (AGE, "15", (None, "out_of_range")),  # the browser's number field kept the old value instead
        (AGE, "50", (50.0, None)),
        (AGE, "33,5", (None, "not_integer")),
        (GLUCOSE, "500", (None, "out_of_range")),  # out of range, never "required"
        (GLUCOSE, "", (None, "required")),
        (GLUCOSE, "x", (None, "not_number")),
        (BMI, "33,6", (33.6, None)),  # never 336
        (BMI, None, (None, None)),  # optional and empty: not measured
        (SEX, "F", ("F", None)),
        (SEX, "X", (None, "not_category")),
    ],
)
def test_rules(feature: dict, raw: str | None, expected: tuple) -> None:
    assert rules.check(feature, raw) == expected


def test_out_of_range_message_names_the_range_in_the_language() -> None:
    assert spec.range_text(GLUCOSE, "es") == "40–400 mg/dL"
    assert spec.range_text(PEDIGREE, "es") == "0,05–2,5"
    assert spec.range_text(PEDIGREE, "en") == "0.05–2.5"
    assert spec.range_text(AGE, "en") == "21–100 years"
    assert tr("rule_out_of_range", "es", detail=spec.range_text(GLUCOSE, "es")) == "fuera del rango válido 40–400 mg/dL"


def test_numbers_use_the_language_decimal_separator() -> None:
    assert spec.format_probability(0.8134, "es") == "81,3 %"
    assert spec.format_probability(0.8134, "en") == "81.3 %"
    assert spec.format_percent(0.2, "es") == "20 %"
    assert spec.decimal(0.8123456, "es", 3) == "0,812"


def _scored(csv_text: str, features: list[dict], chunk_rows: int = 10) -> tuple[batch.Validation, pd.DataFrame]:
    check = batch.validate(batch.read_csv(csv_text.encode()), features)
    preds = {"model": {"version": "3"}, "predictions": []}

    def call(records: list[dict]) -> dict:
        rid = f"req{len(calls)}"
        calls.append(rid)
        return {**preds, "request_id": rid,
                "predictions": [{"probability": 0.8134, "risk_level": "high", "label": 1}] * len(records)}  # fmt: skip

    calls: list[str] = []

    return check, batch.score(check, call, chunk_rows)


def test_scored_csv_for_people_follows_the_language() -> None:
    check, results = _scored("id;glucosa;edad\nA;120,5;50\nB;500;50\n", [GLUCOSE, AGE])
    batch.add_errors(results, check.problems, lambda p: f"{p.field}: {p.rule}")
    table, renamed = scored.table(check, results, [GLUCOSE, AGE], BANDS, "es", scored.HUMAN)
    assert renamed == []
    assert list(table.columns) == ["id", "glucosa", "edad", *(tr(f"col_{c}", "es") for c in batch.RESULT_COLUMNS)]
    data = scored.to_csv(table, "es", scored.HUMAN)
    assert data.startswith(b"\xef\xbb\xbf")  # Excel reads the accents of «clasificación»
    back = pd.read_csv(io.StringIO(data.decode("utf-8-sig")), sep=";", dtype=str, keep_default_na=False)
    assert back.iloc[0].tolist() == ["A", "120,5", "50", "81,3", "Alto", "Positivo", "3", "req0", "0", ""]
    assert back.iloc[1].tolist()[:4] == ["B", "500", "50", ""]  # the bad value as typed, no result
    assert back.iloc[1, -1] == "glucosa: out_of_range"

    table, _ = scored.table(check, results, [GLUCOSE, AGE], BANDS, "en", scored.HUMAN)
    back = pd.read_csv(io.BytesIO(scored.to_csv(table, "en", scored.HUMAN)), dtype=str, keep_default_na=False)
    assert list(back.columns)[3:] == ["probability (%)", "risk level", "classification", "model version",
                                      "request_id", "row", "errors"]  # fmt: skip
    assert back.iloc[0].tolist()[:7] == ["A", "120.5", "50", "81.3", "High", "Positive", "3"]


def test_scored_csv_for_programs_uses_the_api_names_and_a_decimal_point() -> None:
    check, results = _scored("id;glucosa;edad\nA;120,5;50\n", [GLUCOSE, AGE])
    for lang in ("es", "en"):
        table, _ = scored.table(check, results, [GLUCOSE, AGE], BANDS, lang, scored.MACHINE)
        back = pd.read_csv(io.BytesIO(scored.to_csv(table, lang, scored.MACHINE)), dtype={"model_version": str})
        assert list(back.columns) == ["id", "glucosa", "edad", *batch.RESULT_COLUMNS]
        assert back.loc[0, "glucosa"] == 120.5 and back.loc[0, "probability"] == 0.8134
        assert back.loc[0, "risk_level"] == "high" and back.loc[0, "label"] == 1


def test_scored_rows_carry_the_key_of_their_logged_prediction() -> None:
    """request_id and row (the position in the request that scored it) for each scored row, in both files:
    the key a confirmed outcome is sent back with. Unscored rows have none."""
    check, results = _scored("id,glucosa,edad\nA,120,50\nB,500,50\nC,130,60\nD,140,70\n", [GLUCOSE, AGE], 2)
    assert results["request_id"].tolist() == ["req0", None, "req0", "req1"]  # A and C in the first chunk
    assert results["row"].tolist() == [0, None, 1, 0]
    for lang, mode in (("es", scored.HUMAN), ("en", scored.MACHINE)):
        table, _ = scored.table(check, results, [GLUCOSE, AGE], BANDS, lang, mode)
        keys = table[["request_id", "row"]].astype(object).where(table[["request_id", "row"]].notna(), None)
        assert keys.values.tolist() == [["req0", "0"], [None, None], ["req0", "1"], ["req1", "0"]]


@pytest.mark.parametrize(("lang", "mode", "clash"), [("es", scored.HUMAN, "Probabilidad (%)"),
                                                       ("en", scored.MACHINE, "probability")])  # fmt: skip
def test_a_clinic_column_named_like_a_result_is_never_overwritten(lang: str, mode: str, clash: str) -> None:
    check, results = _scored(f"glucosa,edad,{clash}\n120,50,keep me\n", [GLUCOSE, AGE])
    table, renamed = scored.table(check, results, [GLUCOSE, AGE], BANDS, lang, mode)
    name = scored.column_names(lang, mode)["probability"]
    assert renamed == [(name, f"{name}_2")]
    assert table[clash].tolist() == ["keep me"]
    assert table[f"{name}_2"].tolist() == ["81,3" if mode == scored.HUMAN else "0.8134"]
    assert table.columns.is_unique


def test_gate_reasons_are_recorded_as_codes_and_shown_in_both_languages() -> None:
    result = GateResult(passed=False)
    result.add("ROC AUC 0.7000 is below the floor 0.8000", "below_floor", auc=0.7, floor=0.8)
    result.add("no current champion", "no_served", alias="champion")
    tags = result.tags()
    assert tags["gate"] == "failed" and tags["gate_reasons"].startswith("ROC AUC 0.7000")  # the old tag stays
    assert json.loads(tags["gate_reason_codes"])[0] == {"code": "below_floor", "auc": 0.7, "floor": 0.8}
    assert components.gate_reasons(tags, "es") == (
        "ROC AUC 0,7000 por debajo del mínimo 0,8000; ninguna versión tenía el alias «champion»"
    )
    assert components.gate_reasons(tags, "en") == "ROC AUC 0.7000 is below the floor 0.8000; no current champion"
    assert components.gate_reasons({"gate_reasons": "old text"}, "es") == "old text"  # versions from before
