"""Reference distributions for drift monitoring, computed from the training data at training time and stored
inside the model (``model.json`` key ``reference_distributions``), so the monitor compares live inputs with
exactly the data this version was trained on, without needing that data.

Per numeric feature: inner edges of (up to) ``BINS`` quantile bins, the share of training rows in each bin,
101 quantiles (for the KS test) and the missing rate. Per categorical feature: category shares and missing
rate. Also the predicted probability (same numeric summary) and the risk-level mix, for prediction drift.
Bin ``k`` holds values ``v`` with ``edges[k-1] <= v < edges[k]`` (the number of edges at or below ``v``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINS = 10
QUANTILES = 101


def numeric_summary(values: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    n = len(values)
    if len(present) == 0:
        return {"type": "numeric", "n": n, "missing_rate": 1.0, "edges": [], "proportions": [1.0], "quantiles": []}
    inner = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1))[1:-1])
    counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(inner) + 1)
    return {
        "type": "numeric",
        "n": int(n),
        "missing_rate": float(1 - len(present) / n),
        "edges": inner.tolist(),
        "proportions": (counts / len(present)).tolist(),
        "quantiles": np.quantile(present, np.linspace(0, 1, QUANTILES)).tolist(),
    }


def categorical_summary(codes: np.ndarray, categories: list[str]) -> dict[str, Any]:
    present = codes[~np.isnan(codes)].astype(int)
    counts = np.bincount(present, minlength=len(categories)) if len(present) else np.zeros(len(categories))
    return {
        "type": "categorical",
        "n": int(len(codes)),
        "missing_rate": float(1 - len(present) / len(codes)) if len(codes) else 0.0,
        "categories": list(categories),
        "proportions": (counts / max(len(present), 1)).tolist(),
    }


def distributions(model: Any, X: np.ndarray, thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Summaries of the training matrix ``X`` (feature order, categories as codes) and of the model's
    predictions on it. ``model`` is the compiled RiskModel; ``thresholds`` (the dataset config's PSI warn and
    alert levels) travel with the model so the app's traffic lights match the monitor job's verdict."""
    feats = {}
    for j, f in enumerate(model.features):
        if f["type"] == "categorical":
            feats[f["name"]] = categorical_summary(X[:, j], f["categories"])
        else:
            feats[f["name"]] = numeric_summary(X[:, j])
    out = model.predict_matrix(X)
    levels = [b["name"] for b in model.spec["risk_bands"]]
    level_counts = {name: int(np.sum(out["risk_level"] == name)) for name in levels}
    return {
        "n": int(len(X)),
        "features": feats,
        "prediction": numeric_summary(out["probability"]),
        "risk_levels": {k: v / len(X) for k, v in level_counts.items()},
        "thresholds": thresholds or {"psi_warn": 0.1, "psi_alert": 0.25},
    }
