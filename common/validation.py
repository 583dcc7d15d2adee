"""A model's input rules, derived from its feature spec (the ``features`` list of ``model.json``).

One implementation of every rule a scored value must meet, shared by the serving routes (and importable by
any part of the project; the pyfunc carries its own copy inside the model, and ``tests/validation_cases.py``
checks that every path agrees):

- type, per value: a numeric feature takes a JSON number (not a string, not a boolean); a categorical feature
  takes one of its category strings (not a number, not even the category's code);
- missing: ``None``/null and NaN (MLflow's client writes NaN for a missing value) mean "not measured" — fine
  for an optional feature, "is required" for the others; an absent column is missing in every row;
- range: ``min <= x <= max`` where the spec gives bounds (±inf is out of range); a feature without bounds still
  refuses ±inf ("must be a finite number");
- whole number: for ``integer`` features;
- category: a categorical code outside the spec's list (only reachable from a matrix built elsewhere).

Problems name the field and the rule (and rows), never a submitted value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Rule keys → English rule text; ``{min}``/``{max}``/``{categories}`` come from the feature spec.
RULES = {
    "required": "is required",
    "number": "must be a number",
    "whole": "must be a whole number",
    "range": "must be between {min} and {max}",
    "at_least": "must be at least {min}",
    "at_most": "must be at most {max}",
    "finite": "must be a finite number",
    "category": "must be one of {categories}",
    # keys that are not features: counted, never named (a key can be data, e.g. a header-less CSV's first row)
    "unknown": "{n} unknown {columns} (not features of this model); expected: {names}",
    # a request parameter, not a feature: ?interval / params.interval on a version trained without an ensemble
    "no_interval": "this model version has no bootstrap ensemble; retrain it to get intervals",
}


def unknown_problem(n: int, names: list[str], rows: tuple[int, ...] = (), in_row: int | None = None) -> Problem:
    """``n`` distinct unknown keys in the request (``in_row`` of them in each of ``rows``)."""
    params = {"n": n, "columns": "column" if n == 1 else "columns", "names": ", ".join(names)}
    return Problem("", "unknown", params | {"in_row": n if in_row is None else in_row}, rows)


def number_text(x: float) -> Any:
    """20.0 → 20, 0.05 → 0.05: a bound as the form and the spec write it."""
    return int(x) if float(x).is_integer() else float(f"{x:g}")


@dataclass(frozen=True)
class Problem:
    """One broken rule of one feature; ``rows`` are 0-based row positions in the request."""

    field: str
    rule: str  # a key of RULES
    params: dict[str, Any]
    rows: tuple[int, ...] = ()

    @property
    def text(self) -> str:
        return RULES[self.rule].format(**self.params)

    def as_dict(self) -> dict[str, Any]:
        """The shape the pyfunc's ``validate_matrix`` uses: field, rule text, row count."""
        return {"field": self.field, "rule": self.text, "rows": len(self.rows)}


@dataclass
class FeatureRules:
    """The rules of one spec, compiled once per model version into arrays (checks are a few vector ops)."""

    features: list[dict[str, Any]]
    names: list[str] = field(init=False)
    index: dict[str, int] = field(init=False)
    categories: dict[int, dict[str, float]] = field(init=False)  # column → category → code

    def __post_init__(self) -> None:
        fs = self.features
        self.names = [f["name"] for f in fs]
        self.index = {n: j for j, n in enumerate(self.names)}
        self.categories = {
            j: {c: float(i) for i, c in enumerate(f["categories"])}
            for j, f in enumerate(fs)
            if f["type"] == "categorical"
        }
        big = np.finfo(float).max  # no bound: still refuses ±inf
        # A categorical column holds codes 0..n-1: the same range and whole-number checks cover it.
        self._lo = np.array([_bound(f, "min", -big, 0.0) for f in fs], dtype=float)
        self._hi = np.array([_bound(f, "max", big, len(f.get("categories") or ()) - 1.0) for f in fs], dtype=float)
        self._whole = np.array([bool(f.get("integer")) or f["type"] == "categorical" for f in fs])
        self._required = np.array([not f.get("optional") for f in fs])

    # ---- one value (JSON / Python objects) --------------------------------------------------------
    def value(self, j: int, v: Any) -> float | None:
        """The value as the matrix holds it (NaN = missing), or None when its type breaks the feature's rule
        (see :meth:`type_problem`). bool is never a number; an int beyond a double is ±inf (out of range)."""
        t = type(v)
        cats = self.categories.get(j)
        if cats is None:
            if t is float:
                return v
            if t is int:  # type(True) is bool, not int
                try:
                    return float(v)
                except OverflowError:
                    return math.inf if v > 0 else -math.inf
            return math.nan if v is None else None
        if t is str:
            return cats.get(v)
        if v is None or (t is float and v != v):
            return math.nan
        return None

    def type_problem(self, j: int) -> tuple[str, dict[str, Any]]:
        """The rule a value of the wrong type breaks: (rule key, params)."""
        cats = self.categories.get(j)
        return ("number", {}) if cats is None else ("category", {"categories": list(cats)})

    def value_problem(self, j: int, x: float) -> tuple[str, dict[str, Any]] | None:
        """The rule one matrix value breaks (NaN = missing), as (rule key, params), or None: the same order as
        :meth:`check` (required, then range, then whole number), for callers that check value by value."""
        if x != x:
            return ("required", {}) if self._required[j] else None
        if x < self._lo[j] or x > self._hi[j]:
            return self._rule(j, "range")
        if self._whole[j] and x != math.floor(x):
            return self._rule(j, "whole")
        return None

    # ---- one column (CSV / Parquet / DataFrame) ---------------------------------------------------
    def column(self, j: int, col: Any) -> tuple[np.ndarray, np.ndarray]:
        """A pandas Series → (float values with NaN = missing, mask of values whose type breaks the rule).
        No coercion: text in a numeric column is refused, and a number is never a category."""
        import pandas as pd

        n = len(col)
        cats = self.categories.get(j)
        if cats is not None:
            is_text = col.map(lambda v: type(v) is str, na_action="ignore").fillna(True).astype(bool)
            codes = col.where(is_text).map(cats)
            return codes.to_numpy(dtype=float, na_value=np.nan), (codes.isna() & col.notna()).to_numpy()
        kind = col.dtype.kind
        if kind in "iuf":
            return col.to_numpy(dtype=float, na_value=np.nan), np.zeros(n, dtype=bool)
        if kind == "b" or isinstance(col.dtype, pd.BooleanDtype):
            return np.full(n, np.nan), col.notna().to_numpy()
        values = np.array([math.nan if _is_na(v, pd) else self.value(j, v) for v in col.tolist()], dtype=object)
        bad = np.array([v is None for v in values], dtype=bool)
        values[bad] = math.nan
        return values.astype(float), bad

    # ---- the matrix -------------------------------------------------------------------------------
    def check(self, X: np.ndarray) -> list[Problem]:
        """Missing required values, range, whole numbers and category codes of a float matrix in feature
        order. One problem per (feature, rule); a cell breaks at most one rule (required, then range, then
        whole number)."""
        with np.errstate(invalid="ignore"):
            miss = np.isnan(X)
            out = ~miss & ((X < self._lo) | (X > self._hi))
            frac = ~miss & ~out & self._whole & (X != np.floor(X))
            required = miss & self._required
        if not (required.any() or out.any() or frac.any()):  # the common case: one pass, no Python loop
            return []
        found: dict[tuple[int, str], tuple[dict[str, Any], set[int]]] = {}
        for mask, kind in ((required, "required"), (out, "range"), (frac, "whole")):
            for j in np.flatnonzero(mask.any(axis=0)).tolist():
                rule, params = self._rule(j, kind)  # out of range and fractional codes: both "category"
                found.setdefault((j, rule), (params, set()))[1].update(np.flatnonzero(mask[:, j]).tolist())
        return [
            Problem(self.names[j], rule, params, tuple(sorted(rows)))
            for (j, rule), (params, rows) in sorted(found.items(), key=lambda item: item[0][0])
        ]

    def _rule(self, j: int, kind: str) -> tuple[str, dict[str, Any]]:
        f = self.features[j]
        if kind == "required":
            return "required", {}
        if j in self.categories:
            return "category", {"categories": list(self.categories[j])}
        if kind == "whole":
            return "whole", {}
        return range_rule(f)


def range_rule(feature: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The range rule of a numeric feature: (key, params)."""
    lo, hi = feature.get("min"), feature.get("max")
    if lo is not None and hi is not None:
        return "range", {"min": number_text(lo), "max": number_text(hi)}
    if lo is not None:
        return "at_least", {"min": number_text(lo)}
    if hi is not None:
        return "at_most", {"max": number_text(hi)}
    return "finite", {}


def _bound(f: dict[str, Any], key: str, unbounded: float, categorical: float) -> float:
    if f["type"] == "categorical":
        return categorical
    return unbounded if f.get(key) is None else float(f[key])


def _is_na(v: Any, pd: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)
