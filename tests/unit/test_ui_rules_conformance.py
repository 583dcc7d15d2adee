"""The app's own check (ui/rules.py, for the form and the batch CSV) against the shared case table
(tests/validation_cases.py): every value case gives the rule the API gives, written as text the way a clinician
types it. Two kinds of case are about JSON types and have no text form, so they are left out by name: a number
sent as a JSON string ("86" typed in a form is the number 86) and ±infinity (no clinician types «inf»; the app
says «not a number»)."""

from __future__ import annotations

import math
from typing import Any

from tests.validation_cases import ABSENT, example, value_cases
from ui import rules

JSON_ONLY = ("-text-number", "-infinity")


def as_text(value: Any) -> str:
    """A value as typed: missing (None, NaN, absent) is an empty field; a whole float is written without «.0»."""
    if value is None or value is ABSENT or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_app_gives_the_apis_rule_for_every_value_case(served: Any) -> None:
    features = served.spec["features"]
    base = example(features)
    checked = 0
    for case in value_cases(features):
        if case.id.endswith(JSON_ONLY):
            continue
        patient = case.patient(base)
        broken = {}
        for f in features:
            _, rule = rules.check(f, as_text(patient.get(f["name"], ABSENT)))
            if rule is not None:
                broken[f["name"]] = rule
        expected = {} if case.accepted else {case.field: rules.UI_RULE[case.rule]}
        assert broken == expected, case.id
        checked += 1
    assert checked >= 3 * len(features)  # the table was really run, not skipped wholesale


def test_the_app_agrees_on_a_spec_with_categories_and_open_bounds() -> None:
    features = [
        {"name": "sexo", "type": "categorical", "categories": ["F", "M"], "optional": False},
        {"name": "hba1c", "type": "numeric", "min": 3.0, "optional": True},
        {"name": "visitas", "type": "numeric", "integer": True, "max": 50, "optional": False},
    ]
    base = example(features)
    for case in value_cases(features):
        if case.id.endswith(JSON_ONLY):
            continue
        patient = case.patient(base)
        broken = {f["name"]: r for f in features if (r := rules.check(f, as_text(patient.get(f["name"], ABSENT)))[1])}
        assert broken == ({} if case.accepted else {case.field: rules.UI_RULE[case.rule]}), case.id
