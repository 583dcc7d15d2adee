"""Per-row reasons come from the same rules as the per-request summary, and Arrow columns become the model's matrix
without ever failing a whole batch on one bad cell."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from pipeline.batch.core import Model, Tally, metric_key, to_matrix
from pipeline.risk_model import RiskModel

FEATURES = [
    {"name": "edad", "type": "numeric", "integer": True, "min": 18, "max": 100, "optional": False},
    {"name": "imc", "type": "numeric", "min": 10, "max": 80, "optional": True},
    {"name": "sexo", "type": "categorical", "categories": ["F", "M"], "optional": False},
    {"name": "fumador", "type": "categorical", "categories": ["si", "no"], "optional": True},
]


@pytest.fixture(scope="module")
def model() -> Model:
    risk = RiskModel()
    terms = [
        {"kind": "linear", "impute": 50.0, "center": 50.0, "scale": 10.0, "weight": 0.5},
        {"kind": "linear", "impute": 28.0, "center": 28.0, "scale": 5.0, "weight": 0.3},
        {"kind": "categorical", "impute": 0.0, "weights": [0.0, 0.4]},
        {"kind": "categorical", "impute": 1.0, "weights": [0.7, 0.0]},
    ]
    spec = {"features": FEATURES, "threshold": 0.5,
            "risk_bands": [{"name": "low", "upper": 0.2}, {"name": "high", "upper": 1.0}]}  # fmt: skip
    risk.load_dict({"spec": spec, "params": {"intercept": -1.0, "terms": terms, "reference": [0.0] * 4}})
    return Model(uri="test", name="t", version="1", risk=risk)


def test_row_errors_and_validate_matrix_share_their_rules(model: Model) -> None:
    rng = np.random.default_rng(3)
    n = 2000
    X = np.column_stack([
        rng.choice([17, 18, 45, 45.5, 100, 101, np.nan], n),
        rng.choice([9, 10, 30.5, 80, 81, np.nan], n),
        rng.choice([0, 1, 2, -1, 0.5], n),
        rng.choice([0, 1, 2, np.nan], n),
    ])  # fmt: skip
    X[:, 0][np.isnan(X[:, 0])] = 45  # no missing required value: the summary then reports every rule
    errors = model.risk.row_errors(X)
    per_rule = Counter(r for e in errors if e for r in e.split("; "))
    summary = {f"{p['field']}: {p['rule']}": p["rows"] for p in model.risk.validate_matrix(X)}
    assert dict(per_rule) == summary
    assert "edad: must be a whole number" in summary and "sexo: must be one of ['F', 'M']" in summary
    valid = errors == ""
    assert model.risk.validate_matrix(X[valid]) == []
    assert all(model.risk.validate_matrix(X[[i]]) for i in np.flatnonzero(~valid))


def test_arrow_columns_to_matrix_keep_bad_cells_to_their_row(model: Model) -> None:
    cols = {
        "edad": pa.array(["40", "86.75", None, "50", "abc", "120"]),  # text, as the CSV reader gives it
        "imc": pa.array(["25", None, "30", " ", "20", ""]),  # blank text: not measured
        "sexo": pa.array(["F", "M", "F", "X", "M", "F"]),
        "fumador": None,  # absent optional column: not measured
    }
    X, errors = to_matrix(model, cols, 6)
    assert errors.tolist() == [
        "",
        "edad: must be a whole number",
        "edad: is required",
        "sexo: must be one of ['F', 'M']",
        "edad: must be a number",
        "edad: must be between 18 and 100",
    ]
    assert X[0].tolist()[:3] == [40.0, 25.0, 0.0] and np.isnan(X[0, 3]) and np.isnan(X[5, 1])
    for e in errors:
        assert "86.75" not in e and "abc" not in e and "120" not in e


def test_number_coded_categories_and_non_numbers(model: Model) -> None:
    spec = [dict(f) for f in FEATURES]
    spec[2] = {"name": "sexo", "type": "categorical", "categories": ["1", "2"], "optional": False}
    risk = RiskModel()
    risk.load_dict({"spec": {**model.risk.spec, "features": spec},
                    "params": {"intercept": 0.0, "terms": model.risk.terms, "reference": [0.0] * 4}})  # fmt: skip
    coded = Model(uri="t", name="t", version="1", risk=risk)
    X, errors = to_matrix(coded, {"edad": pa.array([30, 30, 30]), "sexo": pa.array([1.0, 2.0, None])}, 3)
    assert X[:, 2].tolist()[:2] == [0.0, 1.0] and errors.tolist() == ["", "", "sexo: is required"]
    X, errors = to_matrix(coded, {"edad": pa.array([30, 31]), "sexo": pa.array(["2", "1"])}, 2)  # no nulls: no copy
    assert X[:, 2].tolist() == [1.0, 0.0] and errors.tolist() == ["", ""]
    X, errors = to_matrix(coded, {"edad": pa.array([True, False]), "sexo": pa.array([2, 3])}, 2)
    assert errors.tolist() == ["edad: must be a number", "edad: must be a number; sexo: must be one of ['1', '2']"]


def test_tally_summary_names_rules_and_counts() -> None:
    tally = Tally()
    tally.add(["a: is required", "a: is required; b: must be a number"], 1000)
    assert tally.summary() == "2 of 1000 rows invalid (0.20%): a: is required (2); b: must be a number (1)"
    assert metric_key("sexo: must be one of ['F', 'M']") == "invalid_rows/sexo_must_be_one_of_F_M"


def test_an_unbounded_feature_refuses_infinity_as_the_api_does() -> None:
    from common.validation import FeatureRules

    features = [{"name": "x", "type": "numeric", "optional": False}, {"name": "y", "type": "numeric", "min": 0,
                "optional": True}]  # fmt: skip
    risk = RiskModel()
    terms = [{"kind": "linear", "impute": 0.0, "center": 0.0, "scale": 1.0, "weight": 0.1}] * 2
    spec = {"features": features, "threshold": 0.5, "risk_bands": [{"name": "all", "upper": 1.0}]}
    risk.load_dict({"spec": spec, "params": {"intercept": 0.0, "terms": terms, "reference": [0.0, 0.0]}})
    X = np.array([[np.inf, 1.0], [-np.inf, 1.0], [1e300, np.inf], [2.0, np.nan]])
    api = FeatureRules(features).check(X)
    assert [(p.field, p.text, len(p.rows)) for p in api] == [("x", "must be a finite number", 2),
                                                             ("y", "must be at least 0", 1)]  # fmt: skip
    assert risk.validate_matrix(X) == [p.as_dict() for p in api]
    assert list(risk.row_errors(X)) == ["x: must be a finite number", "x: must be a finite number",
                                        "y: must be at least 0", ""]  # fmt: skip
