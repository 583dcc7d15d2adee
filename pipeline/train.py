"""Fit the scikit-learn pipeline, choosing family and hyperparameters by cross-validation on the
training data only, and compile the fit into the additive form that ``risk_model.py`` serves."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from pipeline.config import CV_FOLDS, CV_REPEATS, SEED, ConfigError, DatasetConfig
from pipeline.evaluate import calibration_intercept_slope

# Only additive families: the model contract promises per-feature contributions that add up to the
# logit exactly, which an additive logit gives for free (a tree ensemble would need TreeSHAP). The
# EBM is boosted trees restricted to one feature each (main effects, no interactions): additive too.
FAMILIES = ("logistic", "spline", "ebm")
# Isotonic recalibration is scored in the same nested CV and reported, but never chosen: a step
# function of the logit breaks the exact per-feature contributions the contract promises.
CALIBRATIONS = ("none", "sigmoid")
REPORTED_CALIBRATIONS = ("none", "sigmoid", "isotonic")
SELECT_BY = ("brier", "log_loss")
C_GRID = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
KNOTS_GRID = [3, 4, 5]
# One EBM setting: each EBM fit costs about a second here, and the grid runs 20 CV fits per point.
# Few outer bags (the bagged average is refitted with ENSEMBLE_SIZE bootstrap bags at the end).
EBM_GRID = {"max_bins": [32], "outer_bags": [4]}
ENSEMBLE_SIZE = 100  # bootstrap members behind the per-prediction interval


def _slope(y: np.ndarray, p: np.ndarray) -> float:
    return calibration_intercept_slope(y, p)[1]


SCORERS = {
    "brier": "neg_brier_score",
    "log_loss": "neg_log_loss",
    "calibration_slope": make_scorer(_slope, response_method="predict_proba"),
}


@dataclass
class TrainOptions:
    family: str = "auto"
    C: str = "auto"
    n_knots: str = "auto"
    calibration: str = "auto"
    cv_folds: int = CV_FOLDS
    cv_repeats: int = CV_REPEATS
    seed: int = SEED
    select_by: str = "brier"
    ensemble_size: int = ENSEMBLE_SIZE

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
        if self.select_by not in SELECT_BY:
            raise ConfigError(f"unknown selection score '{self.select_by}'; choose one of {list(SELECT_BY)}")
        if self.ensemble_size < 0:
            raise ConfigError("ensemble_size must be 0 (no interval) or more")
        if self.cv_folds < 2 or self.cv_repeats < 1:
            raise ConfigError("cv_folds must be at least 2 and cv_repeats at least 1")


@dataclass
class Fitted:
    estimator: Any  # the fitted sklearn object (Pipeline or CalibratedClassifierCV)
    family: str
    best_params: dict[str, Any]
    calibration: str
    cv_scores: dict[str, float] = field(default_factory=dict)  # CV selection score (lower is better) per candidate
    # Every candidate's CV Brier, log loss and calibration slope (mean over folds), for the report.
    cv_table: dict[str, dict[str, float | None]] = field(default_factory=dict)
    select_by: str = "brier"


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


def build_ebm(config: DatasetConfig, seed: int = 0, **params: Any) -> Any:
    from interpret.glassbox import ExplainableBoostingClassifier  # training-only dependency

    types = ["continuous" if f.type == "numeric" else "nominal" for f in config.features]
    return ExplainableBoostingClassifier(
        feature_types=types, interactions=0, n_jobs=1, random_state=seed, **{"outer_bags": 4, **params}
    )


def _candidate(config: DatasetConfig, family: str, opts: TrainOptions) -> tuple[Any, dict[str, list[Any]]]:
    if family == "ebm":
        return build_ebm(config, seed=opts.seed), dict(EBM_GRID)
    grid: dict[str, list[Any]] = {"clf__C": C_GRID if opts.C == "auto" else [float(opts.C)]}
    if family == "spline":
        grid["pre__num__spline__n_knots"] = KNOTS_GRID if opts.n_knots == "auto" else [int(float(opts.n_knots))]
        grid["pre__num__spline__knots"] = ["uniform", "quantile"]
    return build_pipeline(config, family, seed=opts.seed), grid


def fit(config: DatasetConfig, X: pd.DataFrame, y: np.ndarray, opts: TrainOptions) -> Fitted:
    """Family and hyperparameters by repeated stratified CV (opts.select_by), then recalibration by a
    nested CV: each outer fold's recalibration map is fitted on inner folds of that fold's training part."""
    opts.check()
    cv = RepeatedStratifiedKFold(n_splits=opts.cv_folds, n_repeats=opts.cv_repeats, random_state=opts.seed)
    families = FAMILIES if opts.family == "auto" else (opts.family,)
    best: tuple[float, str, dict[str, Any]] | None = None
    scores: dict[str, float] = {}
    table: dict[str, dict[str, float | None]] = {}
    # One BLAS thread: the matrices are small, and threads oversubscribe a shared machine (5x slower here).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Missing values detected")  # EBM: we compile its missing bin
        for family in families:
            estimator, grid = _candidate(config, family, opts)
            search = GridSearchCV(estimator, grid, scoring=SCORERS, refit=opts.select_by, cv=cv, n_jobs=1)
            search.fit(X, y)
            table[family] = _cv_row(search.cv_results_, search.best_index_)
            scores[family] = table[family][opts.select_by] or np.inf
            if best is None or scores[family] < best[0]:
                best = (scores[family], family, search.best_params_)
        assert best is not None
        _, family, params = best
        base = _candidate(config, family, opts)[0].set_params(**params)

        calibrations = CALIBRATIONS if opts.calibration == "auto" else (opts.calibration,)
        reported = REPORTED_CALIBRATIONS if opts.calibration == "auto" else calibrations
        if family == "ebm" and opts.calibration == "auto":
            # Recalibrating an EBM in nested CV costs ~100 boosting fits; its bagged fit is scored as is.
            calibrations = reported = ("none",)
        chosen, chosen_score = "none", np.inf
        for cal in reported:
            if cal == "none":
                row = table[family]  # the grid search scored exactly this model on the same folds
            else:
                est = _calibrated(base, opts, cal)
                cvr = cross_validate(est, X, y, scoring=SCORERS, cv=cv)
                row = {k: _finite(np.mean(sign * cvr[f"test_{k}"])) for k, sign in _SIGNS.items()}
            table[f"calibration_{cal}"] = row
            scores[f"calibration_{cal}"] = row[opts.select_by] or np.inf
            if cal in calibrations and scores[f"calibration_{cal}"] < chosen_score - 1e-12:
                chosen, chosen_score = cal, scores[f"calibration_{cal}"]
        estimator = base if chosen == "none" else _calibrated(base, opts, chosen)
        estimator.fit(X, y)
    return Fitted(estimator, family, dict(params), chosen, scores, table, opts.select_by)


# Scorers are "greater is better"; the table reports losses as losses.
_SIGNS = {"brier": -1.0, "log_loss": -1.0, "calibration_slope": 1.0}


def _cv_row(results: dict[str, Any], i: int) -> dict[str, float | None]:
    return {k: _finite(sign * results[f"mean_test_{k}"][i]) for k, sign in _SIGNS.items()}


def _finite(x: float) -> float | None:
    # None, not NaN, in model.json (strict JSON readers refuse NaN): isotonic maps can give 0/1
    # probabilities, whose logit (and so calibration slope) is undefined.
    return float(x) if np.isfinite(x) else None


def _calibrated(base: Any, opts: TrainOptions, method: str = "sigmoid") -> CalibratedClassifierCV:
    # ensemble=False: one base model refit on all data plus one Platt map fitted on out-of-fold
    # scores, so the calibrated logit stays additive (an average of sigmoids would not be).
    return CalibratedClassifierCV(base, method=method, cv=opts.cv_folds, ensemble=False)


def log_cv(fitted: Fitted) -> dict[str, float]:
    """The CV table as flat MLflow metrics: cv_<candidate>_<brier|log_loss|calibration_slope>."""
    return {f"cv_{cand}_{k}": v for cand, row in fitted.cv_table.items() for k, v in row.items() if v is not None}


# ---- compile ---------------------------------------------------------------------------------------
def _unwrap(est: Any) -> tuple[Any, float, float]:
    """The additive model inside and the Platt map (a, b) folded onto its logit: a * logit + b."""
    if isinstance(est, CalibratedClassifierCV):
        cc = est.calibrated_classifiers_[0]
        cal = cc.calibrators[0]
        if not hasattr(cal, "a_"):
            raise RuntimeError("only Platt (sigmoid) recalibration keeps the model additive")
        return cc.estimator, -float(cal.a_), -float(cal.b_)  # sklearn's Platt map is 1 / (1 + exp(a f + b))
    return est, 1.0, 0.0


def compile_additive(fitted: Fitted, config: DatasetConfig, X_train: pd.DataFrame) -> dict[str, Any]:
    """The fitted model as an intercept plus one term per feature (see risk_model.py)."""
    model, a, b = _unwrap(fitted.estimator)
    if isinstance(model, Pipeline):
        return _compile_pipeline(model, a, b, config)[0]
    return _compile_ebm(model, a, b, config)


def _compile_pipeline(pipe: Pipeline, a: float, b: float, config: DatasetConfig) -> tuple[dict[str, Any], list[int]]:
    """Terms, and the order of the pipeline's design-matrix columns in the served model's basis."""
    pre, clf = pipe.named_steps["pre"], pipe.named_steps["clf"]
    coef = clf.coef_.ravel() * a
    intercept = float(clf.intercept_[0]) * a + b
    columns: dict[int, range] = {}  # term -> its columns in the pipeline's design matrix

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
                    columns[index[name]] = range(offset, offset + 1)
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
                    columns[index[name]] = range(offset, offset + n)
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
                columns[index[name]] = range(offset, offset + n)
                offset += n
    if offset != coef.size:
        raise RuntimeError(f"compiled {offset} coefficients but the model has {coef.size}")
    order = [i for j in range(len(terms)) for i in columns[j]]
    return {"intercept": intercept, "terms": terms, "reference": [0.0] * len(terms)}, order


def _compile_ebm(ebm: Any, a: float, b: float, config: DatasetConfig) -> dict[str, Any]:
    """Main-effect EBM: per feature, a score per bin (numeric: bins between cut points) and a score for
    a missing value; the library's last 'unknown' bin is unreachable once inputs are validated."""
    if any(len(f) != 1 for f in ebm.term_features_):
        raise RuntimeError("only main-effect EBMs compile to one term per feature")
    terms: list[dict[str, Any]] = []
    for j, f in enumerate(config.features):
        (k,) = [t for t, feats in enumerate(ebm.term_features_) if feats == (j,)]
        scores = np.asarray(ebm.term_scores_[k], dtype=float) * a
        bins = ebm.bins_[j][0]
        if f.type == "numeric":
            edges = np.asarray(bins, dtype=float)
            terms.append({"kind": "bins", "edges": edges.tolist(), "scores": scores[1 : len(edges) + 2].tolist(),
                          "missing": float(scores[0]), "impute": None})  # fmt: skip
        else:
            # Categories the training data never showed fall in EBM's unknown bin, whose score is the last.
            weights = [float(scores[bins[c]]) if c in bins else float(scores[-1]) for c in f.categories or []]
            terms.append({"kind": "categorical", "weights": weights, "missing": float(scores[0]), "impute": None})
    intercept = float(np.ravel(ebm.intercept_)[0]) * a + b
    return {"intercept": intercept, "terms": terms, "reference": [0.0] * len(terms)}


def set_reference(model: Any, X_train_matrix: np.ndarray) -> None:
    """Centre contributions on the training population: the average patient contributes 0."""
    model.reference = np.zeros(len(model.terms))
    model.reference = model.terms_matrix(X_train_matrix).mean(axis=0)


# ---- bootstrap ensemble: the per-prediction interval --------------------------------------------------
def bootstrap_ensemble(
    fitted: Fitted, config: DatasetConfig, X: pd.DataFrame, y: np.ndarray, size: int, seed: int
) -> tuple[dict[str, Any], np.ndarray]:
    """``size`` refits of the chosen model on bootstrap resamples of the training data, over the served
    model's basis (see RiskModel.basis): the preprocessing (imputation, scaling, knots, EBM bins) and the
    hyperparameters stay those of the served fit, only the coefficients/scores are refitted. Returns the
    ensemble for model.json and the served model's own coefficients in the same basis (a self-check)."""
    model, a, b = _unwrap(fitted.estimator)
    rng = np.random.default_rng(seed)
    draws = []
    while len(draws) < size:
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):  # both classes, or the member cannot be fitted
            draws.append(idx)
    if isinstance(model, Pipeline):
        _, order = _compile_pipeline(model, a, b, config)
        design = model.named_steps["pre"].transform(X)
        coefs, intercepts = [], []
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            for idx in draws:
                clf = clone(model.named_steps["clf"]).fit(design[idx], y[idx])
                coefs.append(clf.coef_.ravel()[order] * a)
                intercepts.append(float(clf.intercept_[0]) * a + b)
        main = model.named_steps["clf"].coef_.ravel()[order] * a
        return {"coef": np.array(coefs).T.tolist(), "intercept": intercepts}, main
    # EBM: one refit whose outer bags are the bootstrap resamples (out-of-bag rows serve as each bag's
    # early-stopping set); binning is done on all rows before bagging, so the bins are the served ones.
    counts = np.stack([np.bincount(idx, minlength=len(y)) for idx in draws], axis=1)
    bagged = clone(model).set_params(outer_bags=size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Missing values detected")
        bagged.fit(X, y, bags=np.where(counts > 0, counts, -1).astype(np.int8))
    for j, (mine, theirs) in enumerate(zip(model.bins_, bagged.bins_, strict=True)):
        if not np.array_equal(np.asarray(mine[0], dtype=object), np.asarray(theirs[0], dtype=object)):
            raise RuntimeError(f"the bootstrap EBM binned feature {j} differently from the served one")
    members = [_ebm_vector(model, config, [s[m] for s in bagged.bagged_scores_]) * a for m in range(size)]
    intercepts = (np.ravel(bagged.bagged_intercept_) * a + b).tolist()
    main = _ebm_vector(model, config, model.term_scores_) * a
    return {"coef": np.array(members).T.tolist(), "intercept": intercepts}, main


def _ebm_vector(ebm: Any, config: DatasetConfig, scores: list[np.ndarray]) -> np.ndarray:
    """Per-term EBM scores laid out as RiskModel.basis: per feature [missing, bin or category scores]."""
    parts = []
    for j, f in enumerate(config.features):
        (k,) = [t for t, feats in enumerate(ebm.term_features_) if feats == (j,)]
        s = np.asarray(scores[k], dtype=float)
        if f.type == "numeric":
            parts.append(s[: len(ebm.bins_[j][0]) + 2])
        else:
            bins = ebm.bins_[j][0]
            parts.append(np.array([s[0], *[s[bins[c]] if c in bins else s[-1] for c in f.categories or []]]))
    return np.concatenate(parts)


def attach_ensemble(
    model: Any, params: dict[str, Any], fitted: Fitted, config: DatasetConfig, X: pd.DataFrame, y: np.ndarray,
    opts: TrainOptions,
) -> None:  # fmt: skip
    """Fit the ensemble, store it in ``params`` (model.json) and load it into the served ``model``,
    after checking that the basis reproduces the served logit (the members share it)."""
    if opts.ensemble_size == 0:
        return
    ensemble, main = bootstrap_ensemble(fitted, config, X, y, opts.ensemble_size, opts.seed)
    Xm = model.to_matrix(X)
    gap = float(np.max(np.abs(model.basis(Xm) @ main + model.intercept - model.logit(Xm))))
    if gap > 1e-9:
        raise RuntimeError(f"the ensemble's basis differs from the served model by {gap:g}")
    params["ensemble"] = {"point": main.tolist(), **ensemble}
    model._load_ensemble(params["ensemble"])
