"""The compiled, served model equals the scikit-learn fit, scores missing optional values, and its
contributions add up to the logit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data import load_split
from pipeline.package import feature_spec
from pipeline.risk_model import InvalidInput, RiskModel
from pipeline.train import TrainOptions, compile_additive, fit, set_reference
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def bundled():
    config = load_config(ROOT / "data" / "pima" / "dataset.yaml")
    return config, load_split(config)


def compiled_model(config, split, family: str, calibration: str) -> tuple[RiskModel, object]:
    fitted = fit(
        config, split.X_train, split.y_train, TrainOptions(family=family, calibration=calibration, cv_repeats=1)
    )
    spec = {
        "features": feature_spec(config),
        "threshold": config.threshold,
        "risk_bands": [b.model_dump() for b in config.risk_bands],
    }
    model = RiskModel()
    model.load_dict({"spec": spec, "params": compile_additive(fitted, config, split.X_train)})
    set_reference(model, model.to_matrix(split.X_train))
    return model, fitted.estimator


def with_missing(X: pd.DataFrame, config, seed: int = 0) -> pd.DataFrame:
    """Blank out a third of each optional feature at random."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    for f in config.features:
        if f.optional:
            X.loc[rng.random(len(X)) < 0.33, f.name] = np.nan
    return X


@pytest.mark.parametrize("family, calibration", [("logistic", "none"), ("logistic", "sigmoid"), ("spline", "none")])
def test_compiled_equals_sklearn_and_contributions_add_up(bundled, family: str, calibration: str) -> None:
    config, split = bundled
    model, estimator = compiled_model(config, split, family, calibration)
    X = pd.concat([split.X_test, with_missing(split.X_test, config), with_missing(split.X_train, config, 1)])
    X = X.reset_index(drop=True)
    assert X.isna().any(axis=1).sum() > 300
    expected = estimator.predict_proba(X)[:, 1]
    out = model.predict(None, X, params={"contributions": True})
    np.testing.assert_allclose(out["probability"], expected, rtol=0, atol=1e-10)
    contrib = out.filter(like="contrib_")
    assert list(contrib.columns) == [f"contrib_{n}" for n in model.names]
    np.testing.assert_allclose(contrib.sum(axis=1) + out["baseline"], out["logit"], atol=1e-10)
    np.testing.assert_allclose(1 / (1 + np.exp(-out["logit"])), out["probability"], atol=1e-12)
    assert set(out["risk_level"]) <= {"low", "moderate", "high"}
    assert ((out["probability"] >= config.threshold) == (out["label"] == 1)).all()
    assert ((out["label"] == 1) == (out["risk_level"] == "high")).all()
    # Contributions are centred on the training population.
    train_contrib = model.predict(None, split.X_train, params={"contributions": True}).filter(like="contrib_")
    np.testing.assert_allclose(train_contrib.mean(), 0, atol=1e-9)


def test_validation_names_field_and_rule_without_values(bundled) -> None:
    config, split = bundled
    model, _ = compiled_model(config, split, "logistic", "none")
    row = split.X_test.head(1).copy()
    row["embarazos"] = 5.9
    row["glucosa"] = 9999.0
    row["edad"] = np.nan
    with pytest.raises(InvalidInput) as err:
        model.predict(None, row)
    fields = {p["field"]: p["rule"] for p in err.value.problems}
    assert fields == {
        "embarazos": "must be a whole number",
        "glucosa": "must be between 40 and 400",
        "edad": "is required",
    }
    assert "9999" not in str(err.value) and "5.9" not in str(err.value)
    # An absent optional column means "not measured"; an absent required one is an error.
    assert model.predict(None, split.X_test.drop(columns=["imc", "pliegue_triceps"])).shape[0] == 332
    with pytest.raises(InvalidInput, match="glucosa: is required"):
        model.predict(None, split.X_test.drop(columns=["glucosa"]))
    with pytest.raises(InvalidInput, match="glucosa: must be a number"):
        model.predict(None, split.X_test.assign(glucosa="high"))
    with pytest.raises(InvalidInput, match="glucosa: must be a number"):
        model.predict(None, split.X_test.assign(glucosa="86"))  # no silent coercion of strings
    with pytest.raises(InvalidInput, match="edad: must be a number"):
        model.predict(None, split.X_test.assign(edad=True))
    mixed = split.X_test.head(3).astype({"imc": object})
    mixed.loc[0, "imc"] = None
    assert model.predict(None, mixed)["probability"].notna().all()


def test_fast_path_matches_pyfunc(bundled) -> None:
    config, split = bundled
    model, _ = compiled_model(config, split, "spline", "none")
    X = with_missing(split.X_test, config)
    fast = model.predict_matrix(model.to_matrix(X))
    np.testing.assert_array_equal(fast["probability"], model.predict(None, X)["probability"].to_numpy())


def test_categorical_codes_are_checked_on_the_fast_path() -> None:
    spec = {
        "features": [
            {"name": "sexo", "type": "categorical", "categories": ["F", "M"], "optional": False},
            {"name": "edad", "type": "numeric", "min": 18, "max": 100, "optional": False},
        ],
        "threshold": 0.5,
        "risk_bands": [{"name": "low", "upper": 0.5}, {"name": "high", "upper": 1.0}],
    }
    params = {
        "intercept": -1.0,
        "terms": [
            {"kind": "categorical", "impute": 0.0, "weights": [0.0, 0.7]},
            {"kind": "linear", "impute": 50.0, "center": 50.0, "scale": 10.0, "weight": 0.5},
        ],
        "reference": [0.0, 0.0],
    }
    model = RiskModel()
    model.load_dict({"spec": spec, "params": params})
    for code in (-1.0, 2.0, 0.5, 7.0):
        problems = model.validate_matrix(np.array([[code, 40.0]]))
        assert problems == [{"field": "sexo", "rule": "must be one of ['F', 'M']", "rows": 1}]
    assert model.validate_matrix(np.array([[1.0, 40.0], [np.nan, 40.0]])) == [
        {"field": "sexo", "rule": "is required", "rows": 1}
    ]
    out = model.predict(None, pd.DataFrame({"sexo": ["M", "F"], "edad": [60.0, 60.0]}))
    assert out["probability"].iloc[0] > out["probability"].iloc[1]
