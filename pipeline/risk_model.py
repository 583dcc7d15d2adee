"""The served DM2 risk model, logged with MLflow's models-from-code.

MLflow stores this file with the model and runs it at load time, so a serving process needs only
numpy (and scipy for spline features) — no training code and no scikit-learn unpickling. The fitted
scikit-learn pipeline is compiled at training time into ``model.json``: an additive logit

    logit(x) = intercept + sum_j g_j(x_j)

with imputation, scaling and Platt calibration folded in, so per-feature contributions add up to
the logit exactly and a prediction is a few vector operations.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


class InvalidInput(MlflowException):
    """Input the model cannot score; the message names the field and the rule, never a value."""

    def __init__(self, problems: list[dict[str, Any]]):
        self.problems = problems
        text = "; ".join(f"{p['field']}: {p['rule']}" for p in problems)
        super().__init__(f"Invalid input: {text}", error_code=INVALID_PARAMETER_VALUE)


class RiskModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        with open(context.artifacts["model_json"], encoding="utf-8") as fh:
            self.load_dict(json.load(fh))

    def load_dict(self, doc: dict[str, Any]) -> None:
        self._load_spec(doc["spec"])
        self._load_terms(doc["params"])

    def _load_spec(self, spec: dict[str, Any]) -> None:
        """What the spec says about the inputs and outputs: names, rules, categories, threshold, bands."""
        self.spec: dict[str, Any] = spec
        self.features: list[dict[str, Any]] = spec["features"]
        self.names = [f["name"] for f in self.features]
        self.threshold = float(spec["threshold"])
        bands = spec["risk_bands"]
        self.band_names = np.array([b["name"] for b in bands], dtype=object)
        self.band_uppers = np.array([b["upper"] for b in bands[:-1]], dtype=float)
        self.lo = np.array([f.get("min") if f.get("min") is not None else -np.inf for f in self.features])
        self.hi = np.array([f.get("max") if f.get("max") is not None else np.inf for f in self.features])
        self.integer = np.array([bool(f.get("integer")) for f in self.features])
        self.optional = np.array([bool(f.get("optional")) for f in self.features])
        self.categories = {
            f["name"]: {c: float(i) for i, c in enumerate(f["categories"])}
            for f in self.features
            if f["type"] == "categorical"
        }

    def _load_terms(self, params: dict[str, Any]) -> None:
        """The fitted additive logit: intercept, one term per feature, the reference patient."""
        self.intercept = float(params["intercept"])
        self.terms = params["terms"]
        self.reference = np.array(params["reference"], dtype=float)
        self.impute = np.array([t["impute"] for t in self.terms], dtype=float)
        # Linear terms are evaluated together as one dot product: the common case and the hot path.
        lin = [j for j, t in enumerate(self.terms) if t["kind"] == "linear"]
        self.lin_idx = np.array(lin, dtype=int)
        self.lin_center = np.array([self.terms[j]["center"] for j in lin], dtype=float)
        self.lin_w = np.array([self.terms[j]["weight"] / self.terms[j]["scale"] for j in lin], dtype=float)
        self.other = [j for j in range(len(self.terms)) if j not in set(lin)]
        self.splines = {}
        for j in self.other:
            t = self.terms[j]
            if t["kind"] == "spline":
                from scipy.interpolate import BSpline

                self.splines[j] = BSpline(
                    np.array(t["knots"]), np.array(t["coef"]), int(t["degree"]), extrapolate=False
                )

    # ---- validation -------------------------------------------------------------------------------
    def validate_matrix(self, X: np.ndarray) -> list[dict[str, Any]]:
        """Problems per feature (field, rule, row count); no submitted value is ever included."""
        problems: list[dict[str, Any]] = []
        nan = np.isnan(X)
        for j, f in enumerate(self.features):
            col, miss = X[:, j], nan[:, j]
            if not self.optional[j] and miss.any():
                problems.append({"field": f["name"], "rule": "is required", "rows": int(miss.sum())})
            elif f["type"] == "categorical":
                problems += self._category_problems(f, col, miss)
            else:
                problems += self._numeric_problems(j, f, col, miss)
        return problems

    @staticmethod
    def _category_problems(f: dict[str, Any], col: np.ndarray, miss: np.ndarray) -> list[dict[str, Any]]:
        # Codes index the weights: anything but a known code would crash or wrap around (-1 = last).
        with np.errstate(invalid="ignore"):
            bad = ~miss & ((col < 0) | (col >= len(f["categories"])) | (col != np.floor(col)))
        if not bad.any():
            return []
        return [{"field": f["name"], "rule": f"must be one of {f['categories']}", "rows": int(bad.sum())}]

    def _numeric_problems(self, j: int, f: dict[str, Any], col: np.ndarray, miss: np.ndarray) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with np.errstate(invalid="ignore"):
            outside = ~miss & ((col < self.lo[j]) | (col > self.hi[j]))
        if outside.any():
            rule = _range_rule(f.get("min"), f.get("max"))
            out.append({"field": f["name"], "rule": rule, "rows": int(outside.sum())})
        if self.integer[j]:
            frac = ~miss & (col != np.floor(col))
            if frac.any():
                out.append({"field": f["name"], "rule": "must be a whole number", "rows": int(frac.sum())})
        return out

    # ---- fast path: a float matrix in feature order ---------------------------------------------
    def terms_matrix(self, X: np.ndarray) -> np.ndarray:
        """Each feature's additive term g_j(x_j), shape (n, d); NaN in optional features is imputed."""
        X = np.where(np.isnan(X), self.impute, X)
        G = np.empty_like(X)
        if self.lin_idx.size:
            G[:, self.lin_idx] = (X[:, self.lin_idx] - self.lin_center) * self.lin_w
        for j in self.other:
            t = self.terms[j]
            if t["kind"] == "spline":
                z = (X[:, j] - t["center"]) / t["scale"]
                G[:, j] = self.splines[j](np.clip(z, t["lo"], t["hi"]))  # constant extrapolation
            else:  # categorical: one weight per category code
                G[:, j] = np.asarray(t["weights"])[X[:, j].astype(int)]
        return G

    def logit(self, X: np.ndarray) -> np.ndarray:
        if not self.other:
            X = np.where(np.isnan(X), self.impute, X)
            return self.intercept + (X[:, self.lin_idx] - self.lin_center) @ self.lin_w
        return self.intercept + self.terms_matrix(X).sum(axis=1)

    def probability(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logit(X)))

    def risk_levels(self, p: np.ndarray) -> np.ndarray:
        return self.band_names[np.searchsorted(self.band_uppers, p, side="right")]

    def predict_matrix(self, X: np.ndarray, contributions: bool = False) -> dict[str, np.ndarray]:
        """Scores for a float matrix in feature order (categorical features as category codes)."""
        if contributions:
            G = self.terms_matrix(X)
            logit = self.intercept + G.sum(axis=1)
        else:
            logit = self.logit(X)
        p = 1.0 / (1.0 + np.exp(-logit))
        out: dict[str, np.ndarray] = {
            "probability": p,
            "label": (p >= self.threshold).astype(np.int64),
            "risk_level": self.risk_levels(p),
        }
        if contributions:
            out["logit"] = logit
            out["baseline"] = np.full(len(p), self.baseline)
            for j, name in enumerate(self.names):
                out[f"contrib_{name}"] = G[:, j] - self.reference[j]
        return out

    @property
    def baseline(self) -> float:
        """The logit of the reference patient: baseline + sum of contributions = logit."""
        return self.intercept + float(self.reference.sum())

    # ---- MLflow pyfunc entry point ---------------------------------------------------------------
    def to_matrix(self, df: pd.DataFrame) -> np.ndarray:
        X = np.full((len(df), len(self.names)), np.nan)
        for j, name in enumerate(self.names):
            if name not in df.columns:
                continue  # an absent optional column is "not measured"; required ones fail validation
            col = df[name]
            if name in self.categories:
                codes = col.map(self.categories[name])
                unknown = codes.isna() & col.notna()
                if unknown.any():
                    allowed = list(self.categories[name])
                    raise InvalidInput(
                        [{"field": name, "rule": f"must be one of {allowed}", "rows": int(unknown.sum())}]
                    )
                X[:, j] = codes.to_numpy(dtype=float)
            else:
                # Strict: the string "86" or a boolean is not a number (no silent coercion).
                if not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)):
                    bad = col.map(lambda v: v is not None and not _is_number(v))
                    if bad.any():
                        raise InvalidInput([{"field": name, "rule": "must be a number", "rows": int(bad.sum())}])
                X[:, j] = pd.to_numeric(col).to_numpy(dtype=float, na_value=np.nan)
        return X

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        X = self.to_matrix(pd.DataFrame(model_input))
        problems = self.validate_matrix(X)
        if problems:
            raise InvalidInput(problems)
        contributions = bool((params or {}).get("contributions", False))
        return pd.DataFrame(self.predict_matrix(X, contributions=contributions))


def _range_rule(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"must be between {lo:g} and {hi:g}"
    return f"must be at least {lo:g}" if lo is not None else f"must be at most {hi:g}"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, float) and np.isnan(value):
        return True  # a missing value, judged by the "required" rule
    return isinstance(value, int | float | np.integer | np.floating)


mlflow.models.set_model(RiskModel())
