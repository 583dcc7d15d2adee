"""Every path that checks a patient agrees on every case of one table (tests/validation_cases.py): /invocations,
/predict and the pyfunc the model carries (RiskModel.predict) accept and refuse the same patients and name the
same field; both routes apply the same content-type and encoding rules."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from common.validation import RULES, FeatureRules
from serving.schemas import MESSAGES
from tests.validation_cases import TRANSPORT_CASES, TransportCase, ValueCase, example, value_cases

Outcome = tuple[bool, set[str]]  # (accepted, fields named)



def _invocations(client: Any, row: dict[str, Any], names: list[str]) -> Outcome:
    # json.dumps writes NaN and Infinity, as MLflow's own client does
    r = client.post(
        "/invocations", content=json.dumps({"dataframe_records": [row]}), headers={"Content-Type": "application/json"}
    )
    if r.status_code == 200:
        return True, set()
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    return False, {n for n in names if f"{n}: " in message}


def _predict(client: Any, row: dict[str, Any]) -> Outcome:
    r = client.post("/predict?lang=en", content=json.dumps(row), headers={"Content-Type": "application/json"})
    if r.status_code == 200:
        return True, set()
    assert r.status_code == 422, r.text
    return False, {e["field"] for e in r.json()["errors"]}


def _pyfunc(risk: Any, row: dict[str, Any], names: list[str]) -> Outcome:
    from mlflow.exceptions import MlflowException

    try:
        risk.predict(None, pd.DataFrame([row]))
    except MlflowException as exc:  # the model's own InvalidInput (its class lives in the loaded model's code)
        return False, {p["field"] for p in exc.problems}
    return True, set()


def test_table_covers_every_feature_and_rule(served: Any) -> None:
    cases = value_cases(served.spec["features"])
    assert {c.field for c in cases if c.field} == set(served.names)
    assert {"required", "number", "range", "whole"} <= {c.rule for c in cases}
    assert len({c.id for c in cases}) == len(cases)


def test_value_cases_agree_on_every_path(client: Any, served: Any) -> None:
    features = served.spec["features"]
    base, names = example(features), served.names
    disagreements = []
    for case in value_cases(features):
        row = case.patient(base)
        expected: Outcome = (case.accepted, set() if case.accepted else {case.field})
        got = {
            "/invocations": _invocations(client, row, names),
            "/predict": _predict(client, row),
            "pyfunc": _pyfunc(served.risk, row, names),
        }
        for path, outcome in got.items():
            if outcome != expected:
                disagreements.append(f"{case.id}: {path} gave {outcome}, expected {expected}")
    assert not disagreements, "\n".join(disagreements)


def test_value_cases_name_the_rule(client: Any, served: Any) -> None:
    """Both routes word the rule as common.validation does (and /predict's Spanish message exists)."""
    features = served.spec["features"]
    rules = FeatureRules(features)
    base = example(features)
    for case in value_cases(features):
        if case.accepted:
            continue
        row = case.patient(base)
        j = rules.index[case.field]
        params = rules._rule(j, "range")[1] if case.rule in ("range", "at_least", "at_most") else {}
        text = RULES[case.rule].format(**params)
        r = client.post(
            "/invocations",
            content=json.dumps({"dataframe_records": [row]}),
            headers={"Content-Type": "application/json"},
        )
        assert f"{case.field}: {text}" in r.json()["message"], (case.id, r.text)
        r = client.post("/predict?lang=es", content=json.dumps(row), headers={"Content-Type": "application/json"})
        (err,) = r.json()["errors"]
        assert (err["row"], err["field"], err["rule"]) == (0, case.field, text), case.id
        assert err["message"] == MESSAGES[case.rule][0].format(**params), case.id


@pytest.mark.parametrize("case", TRANSPORT_CASES, ids=[c.id for c in TRANSPORT_CASES])
def test_transport_cases_agree_on_both_routes(client: Any, served: Any, case: TransportCase) -> None:
    patient = example(served.spec["features"])
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    bodies = {"/invocations": {"dataframe_records": [patient]}, "/predict": patient}
    for route, doc in bodies.items():
        r = client.post(route, content=case.body(doc), headers=headers)
        assert r.status_code == case.status, (route, r.text)
        if case.status != 200:
            assert "request_id" in r.json() if route == "/predict" else "error_code" in r.json()


def test_case_is_a_plain_patient() -> None:
    case = ValueCase("x", {"a": 1})
    assert case.patient({"a": 0, "b": 2}) == {"a": 1, "b": 2} and case.accepted
