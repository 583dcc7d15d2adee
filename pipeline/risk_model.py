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

REQUIRED = "is required"


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
        self.spec: dict[str, Any] = doc["spec"]
        params = doc["params"]
        self.features: list[dict[str, Any]] = self.spec["features"]
        self.names = [f["name"] for f in self.features]
        self.threshold = float(self.spec["threshold"])
        bands = self.spec["risk_bands"]
        self.band_names = np.array([b["name"] for b in bands], dtype=object)
        self.band_uppers = np.array([b["upper"] for b in bands[:-1]], dtype=float)
        self.intercept = float(params["intercept"])
        self.terms = params["terms"]
        self.reference = np.array(params["reference"], dtype=float)
        d = len(self.features)
        # No bound is ±(largest double), not ±inf: an unbounded feature still refuses ±inf ("must be a finite
        # number"), as the API's rules do (common/validation.py).
        big = np.finfo(float).max
        self.lo = np.array([f.get("min") if f.get("min") is not None else -big for f in self.features], dtype=float)
        self.hi = np.array([f.get("max") if f.get("max") is not None else big for f in self.features], dtype=float)
        self.integer = np.array([bool(f.get("integer")) for f in self.features])
        self.optional = np.array([bool(f.get("optional")) for f in self.features])
        # None: the term scores a missing value itself (EBM's missing bin) instead of imputing it.
        self.impute = np.array([np.nan if t["impute"] is None else t["impute"] for t in self.terms], dtype=float)
        # Linear terms are evaluated together as one dot product: the common case and the hot path.
        lin = [j for j, t in enumerate(self.terms) if t["kind"] == "linear"]
        self.lin_idx = np.array(lin, dtype=int)
        self.lin_center = np.array([self.terms[j]["center"] for j in lin], dtype=float)
        self.lin_w = np.array([self.terms[j]["weight"] / self.terms[j]["scale"] for j in lin], dtype=float)
        self.lin_w_scale = np.array([self.terms[j]["scale"] for j in lin], dtype=float)
        self.other = [j for j in range(d) if j not in set(lin)]
        self.splines = {}
        for j in self.other:
            t = self.terms[j]
            if t["kind"] == "spline":
                from scipy.interpolate import BSpline

                self.splines[j] = BSpline(
                    np.array(t["knots"]), np.array(t["coef"]), int(t["degree"]), extrapolate=False
                )
        self.bins = {j: np.asarray(self.terms[j]["edges"]) for j in self.other if self.terms[j]["kind"] == "bins"}
        self._load_ensemble(params.get("ensemble"))
        self.categories = {
            f["name"]: {c: float(i) for i, c in enumerate(f["categories"])}
            for f in self.features
            if f["type"] == "categorical"
        }

    # ---- validation -------------------------------------------------------------------------------
    def validate_matrix(self, X: np.ndarray) -> list[dict[str, Any]]:
        """Problems per feature (field, rule, row count); no submitted value is ever included."""
        problems = []
        for j, f in enumerate(self.features):
            for rule, bad in _rule_masks(self, j, X[:, j]):
                if bad.any():
                    problems.append({"field": f["name"], "rule": rule, "rows": int(bad.sum())})
                    if rule == REQUIRED:
                        break  # a missing required value is the feature's one problem
        return problems

    def row_errors(self, X: np.ndarray) -> np.ndarray:
        """Per row, the rules it breaks as "field: rule; ..." ("" for a valid row); never a value."""
        out = np.full(len(X), "", dtype=object)
        for j, f in enumerate(self.features):
            for rule, bad in _rule_masks(self, j, X[:, j]):
                rows = np.flatnonzero(bad)
                if rows.size:
                    reason, prev = f"{f['name']}: {rule}", out[rows]
                    out[rows] = np.where(prev == "", reason, prev + "; " + reason)
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
            elif t["kind"] == "bins":  # piecewise constant between cut points; NaN scores "missing"
                x = X[:, j]
                scores = np.asarray(t["scores"])[np.searchsorted(self.bins[j], x, side="right")]
                G[:, j] = np.where(np.isnan(x), t["missing"], scores)
            else:  # categorical: one weight per category code (NaN: its own score, when the term has one)
                x = X[:, j]
                weights = np.asarray(t["weights"])[np.nan_to_num(x).astype(int)]
                G[:, j] = np.where(np.isnan(x), t.get("missing", np.nan), weights)
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

    # ---- per-prediction interval: a bootstrap ensemble over the same basis ------------------------
    # Every term is linear in a fixed basis (the scaled value, B-spline values, one-hot of a category or
    # bin), so B refitted members are a (K, B) coefficient matrix and all their logits one matrix product.
    INTERVAL_LEVEL = 0.90

    def _load_ensemble(self, ens: dict[str, Any] | None) -> None:
        self.ens_coef = self.ens_intercept = None
        if ens is not None:
            # Column 0 is the served model itself in the same basis: one product gives the point logit
            # and every member's, so the basis (the costly part for splines) is evaluated once.
            self.ens_coef = np.column_stack([ens["point"], np.asarray(ens["coef"], dtype=float)])
            self.ens_intercept = np.r_[self.intercept, np.asarray(ens["intercept"], dtype=float)]
            members = self.ens_coef.shape[1] - 1
            tail = (1 - self.INTERVAL_LEVEL) / 2
            # np.quantile's linear interpolation between order statistics, precomputed for this B.
            pos = np.array([(members - 1) * tail, (members - 1) * (1 - tail)])
            self.q_lo = np.floor(pos).astype(int)
            self.q_hi = np.minimum(self.q_lo + 1, members - 1)
            self.q_frac = pos - self.q_lo
        self.all_linear = not self.other
        self.spline_basis = {}
        for j, t in enumerate(self.terms):
            if t["kind"] == "spline":
                from scipy.interpolate import BSpline

                n = len(t["knots"]) - int(t["degree"]) - 1
                self.spline_basis[j] = BSpline(np.array(t["knots"]), np.eye(n), int(t["degree"]), extrapolate=False)

    def basis(self, X: np.ndarray) -> np.ndarray:
        """The design matrix (n, K) whose product with a coefficient vector is the logit minus intercept."""
        X = np.where(np.isnan(X), self.impute, X)
        if self.all_linear:
            return (X[:, self.lin_idx] - self.lin_center) / (self.lin_w_scale)
        blocks = []
        for j, t in enumerate(self.terms):
            x = X[:, j]
            if t["kind"] == "linear":
                blocks.append(((x - t["center"]) / t["scale"])[:, None])
            elif t["kind"] == "spline":
                z = np.clip((x - t["center"]) / t["scale"], t["lo"], t["hi"])
                blocks.append(self.spline_basis[j](z))
            else:
                size = len(t["scores"] if t["kind"] == "bins" else t["weights"])
                col = np.searchsorted(self.bins[j], x, side="right") if t["kind"] == "bins" else x
                if "missing" in t:  # column 0 is "missing", then the bins or categories
                    size, col = size + 1, np.where(np.isnan(x), 0, np.nan_to_num(col) + 1)
                onehot = np.zeros((len(x), size))
                onehot[np.arange(len(x)), col.astype(int)] = 1.0
                blocks.append(onehot)
        return np.hstack(blocks)

    def interval_logits(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The point logit and the 5th and 95th percentile of the members' logits (a 90 % interval)."""
        if self.ens_coef is None:
            raise MlflowException(
                "this model version has no bootstrap ensemble, so it cannot give an interval; retrain it",
                error_code=INVALID_PARAMETER_VALUE,
            )
        logits = self.basis(X) @ self.ens_coef + self.ens_intercept  # (n, 1 + B): the one matrix product
        members = np.sort(logits[:, 1:], axis=1)  # 10x faster than np.partition for B = 100 here
        bounds = members[:, self.q_lo] + self.q_frac * (members[:, self.q_hi] - members[:, self.q_lo])
        return logits[:, 0], bounds[:, 0], bounds[:, 1]

    def predict_matrix(
        self, X: np.ndarray, contributions: bool = False, interval: bool = False
    ) -> dict[str, np.ndarray]:
        """Scores for a float matrix in feature order (categorical features as category codes)."""
        if contributions:
            G = self.terms_matrix(X)
            logit = self.intercept + G.sum(axis=1)
        elif interval:
            logit, low, high = self.interval_logits(X)
        else:
            logit = self.logit(X)
        if interval and contributions:
            _, low, high = self.interval_logits(X)
        p = 1.0 / (1.0 + np.exp(-logit))
        out: dict[str, np.ndarray] = {
            "probability": p,
            "label": (p >= self.threshold).astype(np.int64),
            "risk_level": self.risk_levels(p),
        }
        if interval:
            out["probability_low"], out["probability_high"] = 1.0 / (1.0 + np.exp(-low)), 1.0 / (1.0 + np.exp(-high))
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
        interval = bool((params or {}).get("interval", False))
        return pd.DataFrame(self.predict_matrix(X, contributions=contributions, interval=interval))


def _rule_masks(m: RiskModel, j: int, col: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Feature j's rules as (rule, rows breaking it), "is required" first; the one source of the model's checks
    for both the per-request summary (``validate_matrix``) and per-row reasons (``row_errors``)."""
    f, miss = m.features[j], np.isnan(col)
    masks = [] if m.optional[j] else [(REQUIRED, miss)]
    with np.errstate(invalid="ignore"):
        if f["type"] == "categorical":
            # Codes index the weights: anything but a known code would crash or wrap around (-1 = last).
            n = len(f["categories"])
            masks.append(
                (f"must be one of {f['categories']}", ~miss & ((col < 0) | (col >= n) | (col != np.floor(col))))
            )
            return masks
        masks.append((_range_rule(f.get("min"), f.get("max")), ~miss & ((col < m.lo[j]) | (col > m.hi[j]))))
        if m.integer[j]:
            masks.append(("must be a whole number", ~miss & (col != np.floor(col))))
    return masks


def _range_rule(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"must be between {lo:g} and {hi:g}"
    if lo is None and hi is None:  # an unbounded feature: only ±inf breaks it
        return "must be a finite number"
    return f"must be at least {lo:g}" if lo is not None else f"must be at most {hi:g}"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, float) and np.isnan(value):
        return True  # a missing value, judged by the "required" rule
    return isinstance(value, int | float | np.integer | np.floating)


mlflow.models.set_model(RiskModel())
