"""Held-out metrics, plots and the model card."""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or CI
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from sklearn.calibration import CalibrationDisplay, calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    RocCurveDisplay,
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
    roc_curve,
)

from pipeline.config import DatasetConfig
from pipeline.data import prepare, read_csv


def calibration_intercept_slope(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration-in-the-large (intercept with the logit as offset) and the calibration slope."""
    p = np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-12)
    intercept, slope = _weighted_calibration(np.asarray(y, dtype=float), np.log(p / (1 - p)), np.ones((1, len(p))))
    return float(intercept[0]), float(slope[0])


def metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    intercept, slope = calibration_intercept_slope(y, p)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p)),
        "accuracy": float((pred == y).mean()),
        "sensitivity": tp / int((y == 1).sum()),
        "specificity": tn / int((y == 0).sum()),
        "errors": int((pred != y).sum()),
        "n_test": int(len(y)),
        "calibration_intercept": intercept,
        "calibration_slope": slope,
    }


def reference_baselines(
    X_train: pd.DataFrame, y_train: np.ndarray, X_test: pd.DataFrame, y_test: np.ndarray, threshold: float
) -> dict[str, float]:
    """Recomputed, not quoted: plain logistic regression on the complete training rows (Pima.tr for the
    bundled data, as in the literature) with all numeric features, and one on glucose alone."""
    numeric = [c for c in X_train.columns if pd.api.types.is_numeric_dtype(X_train[c])]
    out: dict[str, float] = {}
    complete = X_train[numeric].notna().all(axis=1).to_numpy()
    test_complete = X_test[numeric].notna().all(axis=1).to_numpy()
    if not numeric or min(np.bincount(y_train[complete], minlength=2)) < 2 or len(set(y_test[test_complete])) < 2:
        return out  # no complete-case baseline can be fitted or scored on this data
    lr = LogisticRegression(C=np.inf, max_iter=5000).fit(X_train.loc[complete, numeric], y_train[complete])
    p = lr.predict_proba(X_test.loc[test_complete, numeric])[:, 1]
    yt = y_test[test_complete]
    out["baseline_logreg_roc_auc"] = float(roc_auc_score(yt, p))
    out["baseline_logreg_brier"] = float(brier_score_loss(yt, p))
    out["baseline_logreg_errors"] = int(((p >= threshold).astype(int) != yt).sum())
    if "glucosa" in numeric:
        g = X_test["glucosa"].to_numpy()
        out["baseline_glucose_roc_auc"] = float(roc_auc_score(y_test[~np.isnan(g)], g[~np.isnan(g)]))
    return out


def plots(
    y: np.ndarray, p: np.ndarray, threshold: float, effects: dict[str, tuple[np.ndarray, np.ndarray]], out: Path
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = []

    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(y, p, ax=ax, name="model")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_title("ROC, held-out test set")
    files.append(_save(fig, out / "roc.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(y, p, n_bins=8, strategy="quantile", ax=ax, name="model")
    ax.set_title("Calibration, held-out test set")
    files.append(_save(fig, out / "calibration.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(y, (p >= threshold).astype(int), ax=ax, colorbar=False)
    ax.set_title(f"Confusion matrix at threshold {threshold:g}")
    files.append(_save(fig, out / "confusion_matrix.png"))

    n = len(effects)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, (xs, gs)) in zip(axes.ravel(), effects.items(), strict=False):
        ax.plot(xs, gs)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle("Feature effects on the log-odds (0 = training average)")
    files.append(_save(fig, out / "feature_effects.png"))
    return files


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _english(text: Any) -> str:
    """A config text that may be one per language: the card (for data scientists, in MLflow) is in English."""
    return text.get("en", "") if isinstance(text, dict) else str(text or "")


def model_card(spec: dict[str, Any]) -> str:
    m = spec["metrics"]
    feats = "\n".join(
        f"- `{f['name']}` — {f['label']['en']}"
        + (f" ({f['unit']})" if f.get("unit") else "")
        + (", optional" if f.get("optional") else "")
        for f in spec["features"]
    )
    bands = ", ".join(
        f"{b['name']} < {b['upper']:g}" if b["upper"] < 1 else f"{b['name']} ≥ previous" for b in spec["risk_bands"]
    )
    published = (
        "\n".join(
            f"- {name}: " + ", ".join(f"{k} {v:g}" for k, v in vals.items())
            for name, vals in spec.get("published_baselines", {}).items()
        )
        or "- none declared in the dataset config"
    )
    return f"""# Model card — {spec["model_name"]}

## Intended use
A **screening aid** that estimates the probability that an adult woman has undiagnosed type 2 diabetes,
to decide who should be tested. It is **not a diagnosis**: confirm with fasting plasma glucose, HbA1c or
an oral glucose tolerance test, read by a clinician.

## Population and data
{_english(spec["description"])}
Training rows: {spec["n_train"]}; held-out test rows: {spec["n_test"]}.
Data checksum (sha256): `{spec["data_checksum"]}`.

## Inputs
{feats}

## Model
Family `{spec["family"]}`, calibration `{spec["calibration"]}`, hyperparameters {spec["hyperparameters"]} —
chosen by repeated stratified cross-validation on the training data (by {spec.get("select_by", "brier")}). Decision
threshold {spec["threshold"]}; risk bands: {bands}.
{_cv_section(spec)}
## Held-out results ({m["n_test"]} rows, touched once)
ROC AUC {m["roc_auc"]:.3f}, PR AUC {m["pr_auc"]:.3f}, Brier {m["brier"]:.3f}, log loss {m["log_loss"]:.3f},
errors {m["errors"]}/{m["n_test"]}, sensitivity {m["sensitivity"]:.3f}, specificity {m["specificity"]:.3f},
calibration intercept {m["calibration_intercept"]:.3f}, slope {m["calibration_slope"]:.3f}.
{_ci_table(m, spec.get("metrics_ci"))}
Published on the same split:
{published}
{_decision_section(spec)}{_subgroup_section(spec)}{_external_section(spec)}
## Limits
- Developed in women of Pima heritage aged 21 or over; transport to other populations (men, other
  ethnicities, younger patients) is unvalidated and calibration may not hold.
- Small data (a few hundred patients): wide uncertainty around every figure above.
- The 2-hour OGTT glucose input is itself a diagnostic test; the model ranks risk near the threshold.
- Missing optional measurements are imputed with the training median, which adds uncertainty.
"""


# ---- uncertainty: bootstrap confidence intervals ---------------------------------------------------
# Metrics for many bootstrap replicates at once: a replicate is a row of counts W (how often each
# patient was drawn), so every metric is a weighted sum and all replicates are a few matrix products.
CI_METRICS = (
    "roc_auc",
    "brier",
    "log_loss",
    "accuracy",
    "sensitivity",
    "specificity",
    "errors",
    "calibration_intercept",
    "calibration_slope",
)


def weighted_metrics(y: np.ndarray, p: np.ndarray, threshold: float, W: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics of ``metrics`` for each row of weights W (shape (B, n)); W = ones gives the point values."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-12)
    W = np.atleast_2d(np.asarray(W, dtype=float))
    n = W.sum(axis=1)
    pred = (p >= threshold).astype(float)
    pos, neg = W @ y, W @ (1 - y)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "roc_auc": _weighted_auc(y, p, W),
            "brier": W @ (p - y) ** 2 / n,
            "log_loss": -(W @ (y * np.log(p) + (1 - y) * np.log(1 - p))) / n,
            "accuracy": W @ (pred == y) / n,
            "sensitivity": W @ (pred * y) / pos,
            "specificity": W @ ((1 - pred) * (1 - y)) / neg,
            "errors": W @ (pred != y).astype(float),
        }
    out["calibration_intercept"], out["calibration_slope"] = _weighted_calibration(y, np.log(p / (1 - p)), W)
    return out


def _weighted_auc(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per weight row; tied scores count one half."""
    order = np.argsort(p, kind="stable")
    ps, ys, Ws = p[order], y[order], W[:, order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])  # first row of each distinct score
    pos_u = np.add.reduceat(Ws * ys, starts, axis=1)  # weighted cases per distinct score, (B, U)
    neg_u = np.add.reduceat(Ws * (1 - ys), starts, axis=1)
    below = np.cumsum(neg_u, axis=1) - neg_u  # non-cases with a strictly lower score
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos_u * (below + 0.5 * neg_u)).sum(axis=1) / (pos_u.sum(axis=1) * neg_u.sum(axis=1))


def _weighted_calibration(
    y: np.ndarray, lp: np.ndarray, W: np.ndarray, iters: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """Calibration intercept (logit as offset) and slope per weight row, by Newton steps on all rows at once
    (one small logistic fit per bootstrap replicate would be thousands of solver calls)."""
    B = W.shape[0]
    a = np.zeros(B)  # intercept with the slope fixed at 1
    for _ in range(iters):
        mu = _sigmoid(a[:, None] + lp)
        step = (W * (y - mu)).sum(axis=1) / np.maximum((W * mu * (1 - mu)).sum(axis=1), 1e-12)
        a += step
        if np.all(np.abs(step) < 1e-12):
            break
    c, b = np.zeros(B), np.ones(B)  # intercept and slope fitted together
    for _ in range(iters):
        mu = _sigmoid(c[:, None] + b[:, None] * lp)
        r, v = W * (y - mu), W * mu * (1 - mu)
        g0, g1 = r.sum(axis=1), r @ lp
        h00, h01, h11 = v.sum(axis=1), v @ lp, v @ lp**2
        det = np.where(np.abs(h00 * h11 - h01**2) > 1e-300, h00 * h11 - h01**2, np.nan)
        dc, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
        c, b = c + dc, b + db
        if np.all(np.abs(np.nan_to_num(db)) < 1e-12):
            break
    return a, b


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) counts: each row is one resample of the n patients with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def metric_intervals(
    y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals for every metric in CI_METRICS. Replicates where a metric is undefined
    (e.g. no positives drawn) are left out of that metric's interval."""
    reps = weighted_metrics(y, p, threshold, bootstrap_weights(len(y), n_boot, seed))
    tail = (1 - level) / 2 * 100
    out = {}
    for name in CI_METRICS:
        v = reps[name][np.isfinite(reps[name])]
        out[name] = [float(x) for x in np.percentile(v, [tail, 100 - tail])] if v.size else [np.nan, np.nan]
    return out


# ---- decision analysis -----------------------------------------------------------------------------
DC_THRESHOLDS = np.round(np.arange(0.05, 0.6001, 0.01), 2)


def decision_curve(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray = DC_THRESHOLDS) -> pd.DataFrame:
    """Net benefit (Vickers & Elkin 2006) of testing patients whose risk is at or above each threshold
    probability t: TP/n - FP/n * t/(1-t), against testing everyone and testing no one (0)."""
    y = np.asarray(y)
    n, prevalence = len(y), float(np.mean(y))
    t = np.asarray(thresholds, dtype=float)
    treat = np.asarray(p)[None, :] >= t[:, None]
    tp = (treat & (y == 1)).sum(axis=1)
    fp = (treat & (y == 0)).sum(axis=1)
    odds = t / (1 - t)
    return pd.DataFrame(
        {
            "threshold": t,
            "net_benefit_model": tp / n - fp / n * odds,
            "net_benefit_treat_all": prevalence - (1 - prevalence) * odds,
            "net_benefit_treat_none": np.zeros(len(t)),
        }
    )


def curves(y: np.ndarray, p: np.ndarray, dc: pd.DataFrame) -> dict[str, dict[str, list[float]]]:
    """The held-out ROC curve, calibration bins (as the calibration plot draws them) and decision curve as
    numbers, stored in the model's spec so the app draws them itself, in the reader's language."""

    def r(values: Any) -> list[float]:
        return [round(float(v), 4) for v in values]

    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=True)
    observed, predicted = calibration_curve(y, p, n_bins=8, strategy="quantile")
    return {
        "roc": {"fpr": r(fpr), "tpr": r(tpr)},
        "calibration": {"predicted": r(predicted), "observed": r(observed)},
        "decision": {"threshold": r(dc["threshold"]), "model": r(dc["net_benefit_model"]),
                     "treat_all": r(dc["net_benefit_treat_all"])},  # fmt: skip
    }


def decision_plot(dc: pd.DataFrame, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(dc["threshold"], dc["net_benefit_model"], label="model")
    ax.plot(dc["threshold"], dc["net_benefit_treat_all"], "--", label="test everyone")
    ax.plot(dc["threshold"], dc["net_benefit_treat_none"], "k:", label="test no one")
    top = float(dc[["net_benefit_model", "net_benefit_treat_all"]].max().max())
    ax.set_ylim(-0.05, max(top, 0.05) * 1.1)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_title("Decision curve, held-out test set")
    ax.legend()
    return _save(fig, out)


def decision_summary(y: np.ndarray, p: np.ndarray, cut_points: dict[str, float]) -> dict[str, Any]:
    """Thresholds where the model beats both default strategies, and the three net benefits at each of
    the config's cut points (decision threshold, band edges): the figures the model card argues from."""
    dc = decision_curve(y, p)
    better = dc["net_benefit_model"] > np.maximum(dc["net_benefit_treat_all"], 0) + 1e-12
    useful = dc["threshold"][better].to_numpy()
    at = decision_curve(y, p, np.array(list(cut_points.values()), dtype=float))
    at.insert(0, "cut_point", list(cut_points))
    return {
        "useful_thresholds": [float(t) for t in useful],
        "all_useful": bool(better.all()),
        "at_cut_points": at.to_dict(orient="records"),
    }


# ---- subgroups and external cohorts ----------------------------------------------------------------
MIN_CLASS = 5  # below this many cases or non-cases in a subgroup, its metrics are not reported


def subgroup_masks(config: DatasetConfig, X: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(feature, band label, row mask) for every configured numeric band and every category."""
    out = []
    for g in config.subgroups:
        v = X[g.feature].to_numpy(dtype=float)
        edges = [-np.inf, *g.edges, np.inf]
        for lo, hi in itertools.pairwise(edges):
            label = f"< {hi:g}" if lo == -np.inf else f">= {lo:g}" if hi == np.inf else f"{lo:g}-{hi:g}"
            out.append((g.feature, label, (v >= lo) & (v < hi)))
        if np.isnan(v).any():
            out.append((g.feature, "missing", np.isnan(v)))
    for f in config.features:
        if f.type == "categorical":
            col = X[f.name]
            out += [(f.name, str(c), (col == c).to_numpy()) for c in f.categories]
            if col.isna().any():
                out.append((f.name, "missing", col.isna().to_numpy()))
    return out


def cohort_metrics(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Point metrics with 95 % bootstrap intervals, or only counts when a class is too rare to judge."""
    y = np.asarray(y)
    events = int(y.sum())
    row: dict[str, Any] = {"n": int(len(y)), "events": events}
    if min(events, len(y) - events) < MIN_CLASS:
        row["note"] = f"fewer than {MIN_CLASS} cases or non-cases: no metrics"
        return row
    row["metrics"] = metrics(y, p, threshold)
    row["ci"] = metric_intervals(y, p, threshold, n_boot=n_boot, seed=seed)
    return row


def subgroup_report(
    config: DatasetConfig, X: pd.DataFrame, y: np.ndarray, p: np.ndarray, overall_auc: float, n_boot: int, seed: int
) -> list[dict[str, Any]]:
    """Metrics by subgroup. A subgroup is flagged when its whole 95 % AUC interval lies below the overall
    AUC: the model ranks those patients measurably worse than it does the population."""
    rows = []
    for feature, band, mask in subgroup_masks(config, X):
        row = {"feature": feature, "band": band, **cohort_metrics(y[mask], p[mask], config.threshold, n_boot, seed)}
        row["flag"] = bool("ci" in row and row["ci"]["roc_auc"][1] < overall_auc)
        rows.append(row)
    return rows


def load_external(config: DatasetConfig) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """Each external cohort the config names, checked like the training data (ConfigError if not)."""
    out = {}
    for e in config.external:
        path = config.path(e.file)
        assert path is not None
        out[e.name] = prepare(read_csv(path), config, f"external cohort '{e.name}' ({path})")
    return out


# ---- everything above, for one training run --------------------------------------------------------
N_BOOT = 1000


def log_report(config: DatasetConfig, split: Any, model: Any, p: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Intervals, decision curve, subgroups and external validation of the compiled ``model`` (``p``: its
    probabilities on the held-out set), logged to the active MLflow run; returns the model.json spec
    entries the model card reads. External cohorts are scored only here, after the model is chosen."""
    t = config.threshold
    ci = metric_intervals(split.y_test, p, t, n_boot=N_BOOT, seed=seed)
    logged = {f"test_{k}_ci_{side}": v[i] for k, v in ci.items() for i, side in enumerate(("low", "high"))}

    cuts = {"decision threshold": t, **{f"{b.name} band starts": u for b, u in _band_starts(config)}}
    dc = decision_curve(split.y_test, p)
    summary = decision_summary(split.y_test, p, cuts)

    overall_auc = float(roc_auc_score(split.y_test, p))
    groups = subgroup_report(config, split.X_test, split.y_test, p, overall_auc, N_BOOT, seed)
    for g in groups:
        if "metrics" in g:
            key = f"subgroup_{g['feature']}_{_slug(g['band'])}"
            logged[f"{key}_roc_auc"] = g["metrics"]["roc_auc"]
            logged[f"{key}_roc_auc_ci_low"], logged[f"{key}_roc_auc_ci_high"] = g["ci"]["roc_auc"]
    logged["subgroups_flagged"] = sum(g["flag"] for g in groups)

    external = {}
    for name, (X, y) in load_external(config).items():
        pe = model.probability(model.to_matrix(X))
        external[name] = cohort_metrics(y, pe, t, N_BOOT, seed)
        for k, v in external[name].get("metrics", {}).items():
            logged[f"external_{name}_{k}"] = v
        for k, (lo, hi) in external[name].get("ci", {}).items():
            logged[f"external_{name}_{k}_ci_low"], logged[f"external_{name}_{k}_ci_high"] = lo, hi

    mlflow.log_metrics({k: float(v) for k, v in logged.items() if np.isfinite(v)})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        dc.to_csv(out / "decision_curve.csv", index=False)
        (out / "subgroups.json").write_text(json.dumps(groups, indent=1), encoding="utf-8")
        (out / "external.json").write_text(json.dumps(external, indent=1), encoding="utf-8")
        decision_plot(dc, out / "decision_curve.png")
        mlflow.log_artifacts(tmp, "evaluation")
    return {"metrics_ci": ci, "decision": summary, "subgroups": groups, "external": external,
            "curves": curves(split.y_test, p, dc)}  # fmt: skip


def _band_starts(config: DatasetConfig) -> list[tuple[Any, float]]:
    bands = config.risk_bands
    return [(b, prev.upper) for prev, b in itertools.pairwise(bands)]


def _slug(text: str) -> str:
    """A subgroup label as an MLflow metric-name part: '< 30' -> 'lt30', '>= 45' -> 'ge45', '30-45' kept."""
    text = text.replace(">=", "ge").replace("<", "lt").replace(" ", "")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _ci_table(m: dict[str, Any], ci: dict[str, list[float]] | None) -> str:
    if not ci:
        return ""

    def f(v: float, k: str) -> str:
        return f"{v:.0f}" if k == "errors" else f"{v:.3f}"

    rows = "\n".join(
        f"| {k.replace('_', ' ')} | {f(m[k], k)} | {f(lo, k)} – {f(hi, k)} |" for k, (lo, hi) in ci.items()
    )
    return f"""
With 95 % bootstrap intervals ({N_BOOT} resamples of the test patients):

| metric | value | 95 % interval |
|---|---|---|
{rows}
"""


def _decision_section(spec: dict[str, Any]) -> str:
    d = spec.get("decision")
    if not d:
        return ""
    useful = d["useful_thresholds"]
    if d["all_useful"]:
        where = f"at every threshold probability from {DC_THRESHOLDS[0]:g} to {DC_THRESHOLDS[-1]:g}"
    elif useful:
        where = f"at {len(useful)} of {len(DC_THRESHOLDS)} thresholds, between {min(useful):g} and {max(useful):g}"
    else:
        where = "at no threshold in the range analysed: it should not be used to decide testing"
    lines = []
    for r in d["at_cut_points"]:
        verdict = (
            "above both defaults"
            if r["net_benefit_model"] > max(r["net_benefit_treat_all"], 0)
            else "NOT above both defaults"
        )
        lines.append(
            f"- {r['cut_point']} ({r['threshold']:g}): model {r['net_benefit_model']:.3f}, "
            f"test everyone {r['net_benefit_treat_all']:.3f}, test no one 0 — {verdict}"
        )
    return f"""
## Decision analysis
Net benefit on the test set (true positives minus false positives weighted by the odds of the threshold
probability, per patient) beats both testing everyone and testing no one {where}. Plot and table:
`evaluation/decision_curve.png`, `evaluation/decision_curve.csv`. At the config's cut points:
{chr(10).join(lines)}

A cut point is justified when the model's net benefit there is above both defaults: a clinician whose
threshold for testing is that probability gains by following the model.
"""


def _subgroup_section(spec: dict[str, Any]) -> str:
    groups = spec.get("subgroups")
    if not groups:
        return ""
    rows = []
    for g in groups:
        if "metrics" in g:
            lo, hi = g["ci"]["roc_auc"]
            b_lo, b_hi = g["ci"]["brier"]
            cells = (
                f"{g['metrics']['roc_auc']:.3f} ({lo:.3f}–{hi:.3f}) | "
                f"{g['metrics']['brier']:.3f} ({b_lo:.3f}–{b_hi:.3f})"
                f" | {g['metrics']['calibration_slope']:.2f} | {'**FLAG**' if g['flag'] else ''}"
            )
        else:
            cells = f"— | — | — | {g['note']}"
        rows.append(f"| {g['feature']} {g['band']} | {g['n']} | {g['events']} | {cells} |")
    flagged = [f"{g['feature']} {g['band']}" for g in groups if g["flag"]]
    verdict = (
        "Flagged (95 % AUC interval wholly below the overall AUC): " + ", ".join(flagged) + "."
        if flagged
        else "No subgroup's 95 % AUC interval lies wholly below the overall AUC."
    )
    return f"""
## Subgroups (held-out test set)
| subgroup | n | cases | ROC AUC (95 % CI) | Brier (95 % CI) | calibration slope | |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{verdict} Small subgroups have wide intervals: absence of a flag is not evidence of equal performance.
"""


def _external_section(spec: dict[str, Any]) -> str:
    ext = spec.get("external")
    if not ext:
        return "\n## External validation\nNone: the dataset config names no external cohort.\n"
    lines = []
    for name, r in ext.items():
        if "metrics" not in r:
            lines.append(f"- `{name}` ({r['n']} rows, {r['events']} cases): {r['note']}")
            continue
        m, ci = r["metrics"], r["ci"]
        parts = ", ".join(
            f"{k.replace('_', ' ')} {m[k]:.3f} ({ci[k][0]:.3f}–{ci[k][1]:.3f})"
            for k in ("roc_auc", "brier", "calibration_intercept", "calibration_slope")
        )
        lines.append(f"- `{name}` ({r['n']} rows, {r['events']} cases): {parts}; errors {m['errors']}/{r['n']}")
    return f"""
## External validation
The model trained in this run (not re-chosen: these cohorts are never used for selection), scored on:
{chr(10).join(lines)}
"""


def _cv_section(spec: dict[str, Any]) -> str:
    table = spec.get("cv_table")
    if not table:
        return ""

    def cell(v: float, fmt: str) -> str:
        return "—" if v is None or not np.isfinite(v) else format(v, fmt)

    rows = "\n".join(
        f"| {name.replace('calibration_', 'recalibration: ')} | {cell(r['brier'], '.4f')} | "
        f"{cell(r['log_loss'], '.4f')} | {cell(r['calibration_slope'], '.2f')} |"
        for name, r in table.items()
    )
    return f"""
Cross-validation (mean over folds; each family at its best hyperparameters; recalibration of the chosen
family in nested CV, the map fitted on inner folds; isotonic is reported but never chosen, as a step
function of the logit would break the exact per-feature contributions):

| candidate | Brier | log loss | calibration slope |
|---|---|---|---|
{rows}
"""
