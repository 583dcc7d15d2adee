"""Held-out metrics, plots and the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.optimize import brentq
from sklearn.calibration import CalibrationDisplay
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    RocCurveDisplay,
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)


def calibration_intercept_slope(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration-in-the-large (intercept with the logit as offset) and the calibration slope."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    lp = np.log(p / (1 - p))
    slope = float(LogisticRegression(C=np.inf).fit(lp[:, None], y).coef_[0, 0])

    def score(alpha: float) -> float:
        return float(np.sum(y - 1 / (1 + np.exp(-(alpha + lp)))))

    intercept = float(brentq(score, -10, 10))
    return intercept, slope


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
{spec["description"]}
Training rows: {spec["n_train"]}; held-out test rows: {spec["n_test"]}.
Data checksum (sha256): `{spec["data_checksum"]}`.

## Inputs
{feats}

## Model
Family `{spec["family"]}`, calibration `{spec["calibration"]}`, hyperparameters {spec["hyperparameters"]} —
chosen by repeated stratified cross-validation on the training data (Brier score). Decision threshold
{spec["threshold"]}; risk bands: {bands}.

## Held-out results ({m["n_test"]} rows, touched once)
ROC AUC {m["roc_auc"]:.3f}, PR AUC {m["pr_auc"]:.3f}, Brier {m["brier"]:.3f}, log loss {m["log_loss"]:.3f},
errors {m["errors"]}/{m["n_test"]}, sensitivity {m["sensitivity"]:.3f}, specificity {m["specificity"]:.3f},
calibration intercept {m["calibration_intercept"]:.3f}, slope {m["calibration_slope"]:.3f}.

Published on the same split:
{published}

## Limits
- Developed in women of Pima heritage aged 21 or over; transport to other populations (men, other
  ethnicities, younger patients) is unvalidated and calibration may not hold.
- Small data (a few hundred patients): wide uncertainty around every figure above.
- The 2-hour OGTT glucose input is itself a diagnostic test; the model ranks risk near the threshold.
- Missing optional measurements are imputed with the training median, which adds uncertainty.
"""
