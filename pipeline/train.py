"""Fit the scikit-learn pipeline, choosing family and hyperparameters by cross-validation on the
training data only, and compile the fit into the additive form that ``risk_model.py`` serves."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

from pipeline.config import CV_FOLDS, CV_REPEATS, SEED, ConfigError, DatasetConfig

# Only additive families: the model contract promises per-feature contributions that add up to the
# logit exactly, which an additive logit gives for free (a tree ensemble would need TreeSHAP).
FAMILIES = ("logistic", "spline")
CALIBRATIONS = ("none", "sigmoid")
C_GRID = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
KNOTS_GRID = [3, 4, 5]


@dataclass
class TrainOptions:
    family: str = "auto"
    C: str = "auto"
    n_knots: str = "auto"
    calibration: str = "auto"
    cv_folds: int = CV_FOLDS
    cv_repeats: int = CV_REPEATS
    seed: int = SEED

    def check(self) -> None:
        if self.family not in ("auto", *FAMILIES):
            raise ConfigError(f"unknown model family '{self.family}'; choose one of {['auto', *FAMILIES]}")
        if self.calibration not in ("auto", *CALIBRATIONS):
            raise ConfigError(f"unknown calibration '{self.calibration}'; choose one of {['auto', *CALIBRATIONS]}")
        for name in ("C", "n_knots"):
            value = getattr(self, name)
            if value != "auto":
                try:
                    ok = float(value) > 0
                except ValueError:
                    ok = False
                if not ok:
                    raise ConfigError(f"hyperparameter {name} must be 'auto' or a positive number, got '{value}'")
        if self.cv_folds < 2 or self.cv_repeats < 1:
            raise ConfigError("cv_folds must be at least 2 and cv_repeats at least 1")


@dataclass
class Fitted:
    estimator: Any  # the fitted sklearn object (Pipeline or CalibratedClassifierCV)
    family: str
    best_params: dict[str, Any]
    calibration: str
    cv_scores: dict[str, float] = field(default_factory=dict)  # CV Brier (lower is better) per candidate


def build_pipeline(config: DatasetConfig, family: str, C: float = 1.0, n_knots: int = 4, seed: int = 0) -> Pipeline:
    numeric = [f.name for f in config.features if f.type == "numeric"]
    categorical = [f for f in config.features if f.type == "categorical"]
    num_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
    if family == "spline":
        num_steps.append(("spline", SplineTransformer(n_knots=n_knots, degree=3)))
    blocks = []
    if numeric:
        blocks.append(("num", Pipeline(num_steps), numeric))
    if categorical:
        cat = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                ("onehot", OneHotEncoder(categories=[f.categories for f in categorical], handle_unknown="error")),
            ]
        )
        blocks.append(("cat", cat, [f.name for f in categorical]))
    pre = ColumnTransformer(blocks, remainder="drop", sparse_threshold=0.0)
    clf = LogisticRegression(C=C, max_iter=5000, random_state=seed)
    return Pipeline([("pre", pre), ("clf", clf)])


def fit(config: DatasetConfig, X: pd.DataFrame, y: np.ndarray, opts: TrainOptions) -> Fitted:
    opts.check()
    cv = RepeatedStratifiedKFold(n_splits=opts.cv_folds, n_repeats=opts.cv_repeats, random_state=opts.seed)
    families = FAMILIES if opts.family == "auto" else (opts.family,)
    best: tuple[float, str, dict[str, Any]] | None = None
    scores: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for family in families:
            grid: dict[str, list[Any]] = {"clf__C": C_GRID if opts.C == "auto" else [float(opts.C)]}
            if family == "spline":
                grid["pre__num__spline__n_knots"] = KNOTS_GRID if opts.n_knots == "auto" else [int(float(opts.n_knots))]
                grid["pre__num__spline__knots"] = ["uniform", "quantile"]
            search = GridSearchCV(
                build_pipeline(config, family, seed=opts.seed), grid, scoring="neg_brier_score", cv=cv, n_jobs=1
            )
            search.fit(X, y)
            brier = -float(search.best_score_)
            scores[f"{family}"] = brier
            if best is None or brier < best[0]:
                best = (brier, family, search.best_params_)
        assert best is not None
        _, family, params = best
        base = build_pipeline(config, family, seed=opts.seed).set_params(**params)

        calibrations = CALIBRATIONS if opts.calibration == "auto" else (opts.calibration,)
        chosen, chosen_score = "none", np.inf
        for cal in calibrations:
            est = base if cal == "none" else _calibrated(base, opts)
            s = -cross_val_score(est, X, y, scoring="neg_brier_score", cv=cv).mean()
            scores[f"calibration_{cal}"] = float(s)
            if s < chosen_score - 1e-12:
                chosen, chosen_score = cal, s
        estimator = base if chosen == "none" else _calibrated(base, opts)
        estimator.fit(X, y)
    return Fitted(estimator, family, dict(params), chosen, scores)


def _calibrated(base: Pipeline, opts: TrainOptions) -> CalibratedClassifierCV:
    # ensemble=False: one base model refit on all data plus one Platt map fitted on out-of-fold
    # scores, so the calibrated logit stays additive (an average of sigmoids would not be).
    return CalibratedClassifierCV(base, method="sigmoid", cv=opts.cv_folds, ensemble=False)


# ---- compile ---------------------------------------------------------------------------------------
def compile_additive(fitted: Fitted, config: DatasetConfig, X_train: pd.DataFrame) -> dict[str, Any]:
    """The fitted pipeline as an intercept plus one term per feature (see risk_model.py)."""
    est = fitted.estimator
    a, b = 1.0, 0.0
    if isinstance(est, CalibratedClassifierCV):
        cc = est.calibrated_classifiers_[0]
        pipe, cal = cc.estimator, cc.calibrators[0]
        a, b = -float(cal.a_), -float(cal.b_)  # sklearn's Platt map is 1 / (1 + exp(a f + b))
    else:
        pipe = est
    pre, clf = pipe.named_steps["pre"], pipe.named_steps["clf"]
    coef = clf.coef_.ravel() * a
    intercept = float(clf.intercept_[0]) * a + b

    terms: list[dict[str, Any]] = [{}] * len(config.features)
    index = {f.name: j for j, f in enumerate(config.features)}
    offset = 0
    for block, transformer, cols in pre.transformers_:
        if block == "num":
            imp, scale = transformer.named_steps["impute"], transformer.named_steps["scale"]
            spline = transformer.named_steps.get("spline")
            for i, name in enumerate(cols):
                base = {
                    "impute": float(imp.statistics_[i]),
                    "center": float(scale.mean_[i]),
                    "scale": float(scale.scale_[i]),
                }
                if spline is None:
                    terms[index[name]] = {"kind": "linear", "weight": float(coef[offset]), **base}
                    offset += 1
                else:
                    bs = spline.bsplines_[i]
                    k, n = int(bs.k), len(bs.t) - bs.k - 1
                    terms[index[name]] = {
                        "kind": "spline",
                        "knots": bs.t.tolist(),
                        "degree": k,
                        "coef": coef[offset : offset + n].tolist(),
                        "lo": float(bs.t[k]),
                        "hi": float(bs.t[-k - 1]),
                        **base,
                    }
                    offset += n
        elif block == "cat":
            imp, onehot = transformer.named_steps["impute"], transformer.named_steps["onehot"]
            for i, name in enumerate(cols):
                cats = list(onehot.categories_[i])
                n = len(cats)
                terms[index[name]] = {
                    "kind": "categorical",
                    "impute": float(cats.index(imp.statistics_[i])),
                    "weights": coef[offset : offset + n].tolist(),
                }
                offset += n
    if offset != coef.size:
        raise RuntimeError(f"compiled {offset} coefficients but the model has {coef.size}")
    return {"intercept": intercept, "terms": terms, "reference": [0.0] * len(terms)}


def set_reference(model: Any, X_train_matrix: np.ndarray) -> None:
    """Centre contributions on the training population: the average patient contributes 0."""
    model.reference = np.zeros(len(model.terms))
    model.reference = model.terms_matrix(X_train_matrix).mean(axis=0)
