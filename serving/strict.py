"""Strict conversion of MLflow scoring payloads to the model's float matrix.

MLflow's scoring server parses the input formats and then casts each column to the signature's type
with pandas (``astype``): "86" becomes 86.0, True becomes 1.0, unknown columns are dropped. This module
keeps MLflow's envelope rules (exactly one of ``dataframe_split``, ``dataframe_records``, ``instances``,
``inputs``; optional ``params``) and replaces the cast with a check that refuses anything that is not
already the right type. Messages name the field and the rule and never contain a submitted value.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import numpy as np
from mlflow.pyfunc.scoring_server import (
    DF_RECORDS,
    DF_SPLIT,
    INPUTS,
    INSTANCES,
    REQUIRED_INPUT_FORMAT,
    SUPPORTED_FORMATS,
    _split_data_and_params,
)

from serving.model_store import ServedModel

NUMBER = "must be a number"
CHECK_EVERY = 1024  # rows between deadline checks: cheap, and keeps the overrun of a timed-out request small


class InputError(Exception):
    """A request the model cannot score. ``status`` is the HTTP status; the message holds no values."""

    def __init__(self, message: str, status: int = 400, problems: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.problems = problems or []


class Deadline:
    """Cooperative request timeout: long loops call ``check()`` and stop once the time is up."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.seconds = seconds

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise InputError(f"request took longer than {self.seconds:g} s and was stopped", status=504)


def problems_error(problems: list[dict[str, Any]]) -> InputError:
    text = "; ".join(
        (f"{p['field']}: " if p["field"] else "") + p["rule"] + (f" (rows: {p['rows']})" if p.get("rows") else "")
        for p in problems
    )
    return InputError(f"Invalid input: {text}", problems=problems)


def unknown_rule(n: int, names: list[str]) -> str:
    """Unknown columns are counted, never named: a submitted key can be data (a header-less CSV's first row
    is a patient's values). The model's own feature names are safe to list."""
    return f"{n} unknown column{'s' if n != 1 else ''} (not features of this model); expected: {', '.join(names)}"


def range_rule(feature: dict[str, Any]) -> str:
    """The range rule of a numeric feature, worded as the model's own validation words it."""
    lo, hi = feature.get("min"), feature.get("max")
    if lo is not None and hi is not None:
        return f"must be between {lo:g} and {hi:g}"
    if lo is not None or hi is not None:
        return f"must be at least {lo:g}" if lo is not None else f"must be at most {hi:g}"
    return "must be a finite number"


def category_rule(cats: Any) -> str:
    return f"must be one of {list(cats)}"


class _Collector:
    """Counts problems per (field, rule) so a 10k-row request gives one line per problem, not 10k."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.counts: Counter[tuple[str, str]] = Counter()
        self.unknown: set[Any] = set()

    def add(self, field: str, rule: str) -> None:
        self.counts[(field, rule)] += 1

    def add_unknown(self, key: Any) -> None:
        self.unknown.add(key)

    def raise_if_any(self) -> None:
        problems = []
        if self.unknown:
            problems.append({"field": "", "rule": unknown_rule(len(self.unknown), self.model.names), "rows": 0})
        problems += [{"field": f, "rule": r, "rows": n} for (f, r), n in self.counts.items()]
        if problems:
            raise problems_error(problems)


def _value(model: ServedModel, j: int, v: Any, bad: _Collector) -> float:
    t = type(v)
    cats = model.categories.get(j)
    if cats is None:  # numeric feature
        if t is float:
            return v  # ±inf is refused by validate() with the feature's range rule
        if t is int:  # bool is a subclass of int but its type is not int, so True/False fall through
            try:
                return float(v)
            except OverflowError:  # beyond a double: out of range, as ±inf is
                return math.inf if v > 0 else -math.inf
        if v is None:
            return math.nan
        bad.add(model.names[j], NUMBER)
        return math.nan
    # categorical feature: a string from the spec's list, or missing (null; NaN as MLflow's client writes it)
    if t is str:
        code = cats.get(v)
        if code is not None:
            return code
    elif v is None or (t is float and v != v):
        return math.nan
    bad.add(model.names[j], category_rule(cats))
    return math.nan


def _check_limit(n: int, max_rows: int) -> None:
    if n > max_rows:
        raise InputError(f"too many rows: the limit is {max_rows} per request", status=413)


def _records(model: ServedModel, records: list[Any], allow_extra: bool, max_rows: int, dl: Deadline) -> np.ndarray:
    _check_limit(len(records), max_rows)
    index, d, bad = model.index, len(model.names), _Collector(model)
    nan = math.nan
    X = np.empty((len(records), d))
    for i, rec in enumerate(records):
        if not i & (CHECK_EVERY - 1):
            dl.check()
        if type(rec) is not dict:
            raise InputError("each record must be a JSON object mapping feature names to values")
        row = [nan] * d
        for k, v in rec.items():
            j = index.get(k)
            if j is None:
                if not allow_extra:
                    bad.add_unknown(k)
                continue
            row[j] = _value(model, j, v, bad)
        X[i] = row
    bad.raise_if_any()
    return X


def _columns(model: ServedModel, cols: dict[str, Any], allow_extra: bool, max_rows: int, dl: Deadline) -> np.ndarray:
    index, bad = model.index, _Collector(model)
    lists = {k: (v if type(v) is list else [v]) for k, v in cols.items()}
    lengths = {len(v) for v in lists.values()}
    if len(lengths) > 1:
        raise InputError("all columns must have the same number of values")
    n = lengths.pop() if lengths else 0
    _check_limit(n, max_rows)
    X = np.full((n, len(model.names)), np.nan)
    for k, values in lists.items():
        j = index.get(k)
        if j is None:
            if not allow_extra:
                bad.add_unknown(k)
            continue
        dl.check()
        X[:, j] = [_value(model, j, v, bad) for v in values]
    bad.raise_if_any()
    return X


def _split(model: ServedModel, doc: Any, allow_extra: bool, max_rows: int, dl: Deadline) -> np.ndarray:
    if type(doc) is not dict:
        raise InputError("dataframe_split must be an object with 'columns' and 'data'")
    extra = set(doc) - {"columns", "data", "index"}
    if extra or "data" not in doc or "columns" not in doc:
        raise InputError("dataframe_split must have 'columns' and 'data' fields and optionally 'index'")
    columns, data = doc["columns"], doc["data"]
    if type(columns) is not list or type(data) is not list or not all(type(c) is str for c in columns):
        raise InputError("dataframe_split 'columns' must be a list of names and 'data' a list of rows")
    _check_limit(len(data), max_rows)
    index, bad = model.index, _Collector(model)
    targets = []
    for c in columns:
        j = index.get(c)
        if j is None and not allow_extra:
            bad.add_unknown(c)
        targets.append(j)
    bad.raise_if_any()
    pairs = [(pos, j) for pos, j in enumerate(targets) if j is not None]
    width, nan, d = len(columns), math.nan, len(model.names)
    X = np.empty((len(data), d))
    for i, r in enumerate(data):
        if not i & (CHECK_EVERY - 1):
            dl.check()
        if type(r) is not list or len(r) != width:
            raise InputError("each row of dataframe_split 'data' must be a list with one value per column")
        row = [nan] * d
        for pos, j in pairs:
            row[j] = _value(model, j, r[pos], bad)
        X[i] = row
    bad.raise_if_any()
    return X


def _params(params: Any, allow_extra: bool) -> bool:
    """The model's only parameter, ``contributions``; anything else is refused unless extras are allowed."""
    if params is None:
        return False
    if type(params) is not dict:
        raise InputError("params must be a JSON object")
    unknown = [k for k in params if k != "contributions"]
    if unknown and not allow_extra:
        raise InputError(f"params: {len(unknown)} unknown parameter(s); the model's only parameter is contributions")
    value = params.get("contributions", False)
    if type(value) is not bool:
        raise InputError("params.contributions: must be true or false")
    return value


def json_to_matrix(
    model: ServedModel, doc: Any, allow_extra: bool, max_rows: int, dl: Deadline
) -> tuple[np.ndarray, bool]:
    """A decoded MLflow JSON payload → (float matrix in feature order, contributions flag)."""
    if type(doc) is not dict:
        raise InputError(f"{REQUIRED_INPUT_FORMAT}. Received a {type(doc).__name__}.")
    data, params = _split_data_and_params(doc)  # MLflow's own split of the envelope
    if len(data) != 1:
        # Only our own format names are repeated back; other keys are the client's and may be data.
        given = sorted(k for k in doc if k in SUPPORTED_FORMATS)
        raise InputError(f"{REQUIRED_INPUT_FORMAT}. Received {len(given)} of them: {given}")
    extra = set(doc) - SUPPORTED_FORMATS - {"params"}
    if extra and not allow_extra:
        raise InputError(f"{len(extra)} unexpected top-level field(s); expected one input format and optional params")
    contributions = _params(params, allow_extra)
    ((fmt, payload),) = data.items()
    if fmt == DF_SPLIT:
        X = _split(model, payload, allow_extra, max_rows, dl)
    elif fmt == DF_RECORDS:
        if type(payload) is not list:
            raise InputError("dataframe_records must be a list of records")
        X = _records(model, payload, allow_extra, max_rows, dl)
    elif fmt in (INSTANCES, INPUTS):
        if type(payload) is list:
            X = _records(model, payload, allow_extra, max_rows, dl)
        elif type(payload) is dict:
            X = _columns(model, payload, allow_extra, max_rows, dl)
        else:
            raise InputError(f"{fmt} must be a list of records or an object of columns")
    else:  # pragma: no cover - SUPPORTED_FORMATS is the four above
        raise InputError(REQUIRED_INPUT_FORMAT)
    return X, contributions


def frame_to_matrix(model: ServedModel, df: Any, allow_extra: bool, max_rows: int) -> np.ndarray:
    """A DataFrame from CSV/Parquet → float matrix, refusing text in numeric columns (no coercion)."""
    _check_limit(len(df), max_rows)
    bad = _Collector(model)
    X = np.full((len(df), len(model.names)), np.nan)
    for c in df.columns:
        j = model.index.get(c)
        if j is None:
            if not allow_extra:
                bad.add_unknown(c)
            continue
        col = df[c]
        kind = col.dtype.kind
        if j in model.categories:
            cats = model.categories[j]
            # Only strings from the spec's list; a number is never a category (not even 0 for the first one).
            is_text = col.map(lambda v: type(v) is str, na_action="ignore").fillna(True).astype(bool)
            codes = col.where(is_text).map(cats)
            if (codes.isna() & col.notna()).any():
                bad.add(c, category_rule(cats))
            X[:, j] = codes.to_numpy(dtype=float, na_value=np.nan)
        elif kind in "iuf":
            X[:, j] = col.to_numpy(dtype=float, na_value=np.nan)
        elif col.isna().all():  # an all-empty column is read as text or object: "not measured"
            continue
        else:
            bad.add(c, NUMBER)
    bad.raise_if_any()
    return X


def problems(model: ServedModel, X: np.ndarray) -> list[dict[str, Any]]:
    """The model's own rules (required, range, whole number) plus two the model's check leaves out: ±inf in a
    numeric feature without bounds, and a categorical code that is not one of the spec's categories
    (``validate_matrix`` skips categorical columns). Problems name field and rule only."""
    found = model.risk.validate_matrix(X)
    reported = {p["field"] for p in found}
    features = model.spec["features"]
    if np.isinf(X).any():
        for j in np.flatnonzero(np.isinf(X).any(axis=0)):
            name = model.names[j]
            if name not in reported and j not in model.categories:
                rows = int(np.isinf(X[:, j]).sum())
                found.append({"field": name, "rule": range_rule(features[j]), "rows": rows})
                reported.add(name)
    for j, cats in model.categories.items():
        col = X[:, j]
        ok = np.isnan(col) | np.isin(col, np.fromiter(cats.values(), dtype=float))
        if model.names[j] not in reported and not ok.all():
            found.append({"field": model.names[j], "rule": category_rule(cats), "rows": int((~ok).sum())})
    return found


def validate(model: ServedModel, X: np.ndarray) -> None:
    found = problems(model, X)
    if found:
        raise problems_error(found)


def records(out: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Column arrays → list of row dicts with plain Python values (what MLflow's records orient gives)."""
    keys = list(out)
    cols = [out[k].tolist() for k in keys]
    return [dict(zip(keys, vals, strict=True)) for vals in zip(*cols, strict=True)]
