"""Drift and outcome statistics against the reference stored in the model (pipeline/reference.py).

scipy does the tests (KS, chi-square, Wilson intervals) and scikit-learn the scores; what no library offers
for a binned reference is written here: counting values into the reference's bins and the population
stability index, PSI = sum((cur - ref) * ln(cur / ref)) over bins (+ a missing-value bin).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import brier_score_loss, roc_auc_score

EPS = 1e-4  # floor for empty bins: PSI is undefined at 0


def bin_counts(edges: list[float], values: np.ndarray) -> np.ndarray:
    """Counts per reference bin (bin k: edges[k-1] <= v < edges[k]); NaN values are not counted."""
    present = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(np.asarray(edges, float), present, side="right"), minlength=len(edges) + 1)


def psi(ref_props: list[float] | np.ndarray, counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return float("nan")
    ref = np.clip(np.asarray(ref_props, float), EPS, None)
    cur = np.clip(counts / total, EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_pvalue(quantiles: list[float], values: np.ndarray) -> float:
    """One-sample KS test of ``values`` against the reference CDF rebuilt from its stored quantiles (piecewise
    linear between them, so approximate for whole-number features with many ties)."""
    present = values[~np.isnan(values)]
    if len(present) == 0 or not quantiles:
        return float("nan")
    q = np.asarray(quantiles, float)
    probs = np.linspace(0, 1, len(q))
    return float(stats.kstest(present, lambda x: np.interp(x, q, probs)).pvalue)


def chi2_pvalue(ref_props: list[float], counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return float("nan")
    expected = np.clip(np.asarray(ref_props, float), EPS, None)
    expected = expected / expected.sum() * total
    return float(stats.chisquare(counts, expected).pvalue)


def feature_drift(ref: dict[str, Any], values: np.ndarray) -> dict[str, Any]:
    """PSI, test p-value, missing rate and current shares for one feature (numeric values, or category codes)."""
    n = len(values)
    missing = float(np.isnan(values).mean()) if n else float("nan")
    if ref["type"] == "categorical":
        present = values[~np.isnan(values)].astype(int)
        counts = np.bincount(present, minlength=len(ref["categories"]))[: len(ref["categories"])]
        test = chi2_pvalue(ref["proportions"], counts)
    else:
        counts = bin_counts(ref["edges"], values)
        test = ks_pvalue(ref["quantiles"], values)
    total = counts.sum()
    return {
        "psi": psi(ref["proportions"], counts),
        "pvalue": test,
        "test": "chi2" if ref["type"] == "categorical" else "ks",
        "missing_rate": missing,
        "reference_missing_rate": ref["missing_rate"],
        "current": (counts / total).tolist() if total else [],
        "reference": ref["proportions"],
    }


def verdict(psis: dict[str, float], warn: float, alert: float) -> tuple[str, list[str]]:
    """("alert" | "warn" | "ok", names at or over the warning threshold, worst first)."""
    flagged = sorted((k for k, v in psis.items() if np.isfinite(v) and v >= warn), key=lambda k: -psis[k])
    worst = max((v for v in psis.values() if np.isfinite(v)), default=0.0)
    return ("alert" if worst >= alert else "warn" if worst >= warn else "ok"), flagged


def _wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def calibration_slope(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration slope (logistic regression of the outcome on the logit of the prediction, with intercept) and
    its standard error, by Newton's method: the same estimate as pipeline.evaluate's scikit-learn fit, plus the
    Wald standard error that scikit-learn does not give, in milliseconds instead of seconds per fit."""
    pc = np.clip(p, 1e-12, 1 - 1e-12)
    X = np.column_stack([np.ones(len(pc)), np.log(pc / (1 - pc))])
    beta = np.zeros(2)
    for _ in range(50):
        mu = 1 / (1 + np.exp(-(X @ beta)))
        hess = X.T @ (X * (mu * (1 - mu))[:, None])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), X.T @ (y - mu))
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    mu = 1 / (1 + np.exp(-(X @ beta)))
    cov = np.linalg.inv(X.T @ (X * (mu * (1 - mu))[:, None]) + 1e-9 * np.eye(2))
    return float(beta[1]), float(np.sqrt(cov[1, 1]))


def outcome_metrics(y: np.ndarray, p: np.ndarray, threshold: float, boot: int = 300, seed: int = 0) -> dict[str, float]:
    """AUC and Brier (bootstrap 95 % CIs), calibration slope (Wald 95 % CI), sensitivity and specificity (Wilson
    95 % CIs) and the number of outcomes they rest on. Needs both classes for AUC and slope."""
    y = np.asarray(y, int)
    p = np.asarray(p, float)
    n = len(y)
    out: dict[str, float] = {"outcome_n": n, "outcome_positives": int(y.sum())}
    if n == 0:
        return out
    pred = (p >= threshold).astype(int)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    tp, tn = int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 0)).sum())
    out["outcome_brier"] = float(brier_score_loss(y, p))
    if pos:
        out["outcome_sensitivity"] = tp / pos
        out["outcome_sensitivity_ci_low"], out["outcome_sensitivity_ci_high"] = _wilson(tp, pos)
    if neg:
        out["outcome_specificity"] = tn / neg
        out["outcome_specificity_ci_low"], out["outcome_specificity_ci_high"] = _wilson(tn, neg)
    both = pos > 0 and neg > 0
    if both:
        out["outcome_auc"] = float(roc_auc_score(y, p))
        slope, se = calibration_slope(y, p)
        out["outcome_calibration_slope"] = slope
        out["outcome_calibration_slope_ci_low"], out["outcome_calibration_slope_ci_high"] = (
            slope - 1.96 * se,
            slope + 1.96 * se,
        )
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {"brier": [], "auc": []}
    for _ in range(boot):
        idx = rng.integers(0, n, n)
        yb, pb = y[idx], p[idx]
        # plain numpy inside the loop: scikit-learn's input checks cost more than the scores themselves
        samples["brier"].append(float(np.mean((pb - yb) ** 2)))
        n1 = int(yb.sum())
        if both and 0 < n1 < n:
            ranks = stats.rankdata(pb)  # Mann-Whitney form of the AUC, ties counted half
            samples["auc"].append(float((ranks[yb == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (n - n1))))
    for name, vals in samples.items():
        if len(vals) >= boot // 2:
            out[f"outcome_{name}_ci_low"], out[f"outcome_{name}_ci_high"] = map(float, np.percentile(vals, [2.5, 97.5]))
    return out
