"""The model's ``input_example``: synthetic rows built from the dataset spec alone.

MLflow stores the input example with every version, readable by anyone who can read the registry, so it must
never be a training or test row (with a clinic's own CSV those are real patients). Each row places every
numeric feature at a fixed point of its declared range (a quarter, half and three quarters of the way from
``min`` to ``max``; whole numbers rounded) and cycles through the categories of categorical features.
"""

from __future__ import annotations

import pandas as pd

from pipeline.config import DatasetConfig, Feature

FRACTIONS = (0.25, 0.5, 0.75)


def _value(feature: Feature, row: int) -> float | str:
    if feature.type == "categorical":
        categories = feature.categories or [""]
        return categories[row % len(categories)]
    lo = feature.min if feature.min is not None else feature.max if feature.max is not None else 0.0
    hi = feature.max if feature.max is not None else lo
    value = lo + (hi - lo) * FRACTIONS[row]
    return float(round(value)) if feature.integer else float(value)


def input_example(config: DatasetConfig) -> pd.DataFrame:
    """Three synthetic rows with the model's input columns (numeric columns as float, like its signature)."""
    return pd.DataFrame([{f.name: _value(f, i) for f in config.features} for i in range(len(FRACTIONS))])
