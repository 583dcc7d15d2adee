"""Strict conversion of decoded request bodies to the model's float matrix, for /invocations and /predict.

MLflow's scoring server parses the input formats and then casts each column to the signature's type with
pandas (``astype``): "86" becomes 86.0, True becomes 1.0, unknown columns are dropped. This module keeps
MLflow's envelope rules (exactly one of ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``;
optional ``params``) and replaces the cast with the spec's type rules (``common.validation``): anything that is
not already the right type is refused. Both routes then check the matrix with the same ``FeatureRules.check``
and report every problem of a request at once (``Collector.check``).
Messages name the field and the rule and never contain a submitted value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from common.validation import RULES, FeatureRules, Problem, unknown_problem
from serving.errors import (
    Deadline,
    InputError,
    duplicate,
    first_repeated,
    problems_error,
    too_many_columns,
    too_many_rows,
    value_too_long,
)
from serving.mlflow_adapter import DF_RECORDS, DF_SPLIT, INPUTS, INSTANCES, REQUIRED_INPUT_FORMAT, SUPPORTED_FORMATS
from serving.mlflow_adapter import split_data_and_params as _split_data_and_params

if TYPE_CHECKING:
    from serving.limits import Limits
    from serving.model_store import ServedModel

CHECK_EVERY = 1024  # rows between deadline checks: cheap, and keeps the overrun of a timed-out request small


class Collector:
    """Type problems and unknown keys, with the rows they occur in (a 10k-row request gives one problem per
    field and rule, not 10k)."""

    def __init__(self, rules: FeatureRules) -> None:
        self.rules = rules
        self.cells: dict[int, list[int]] = {}  # column → rows whose value has the wrong type
        self.unknown: dict[int, set[Any]] = {}  # row → its unknown keys (-1: not tied to a row)

    def add(self, j: int, row: int) -> None:
        self.cells.setdefault(j, []).append(row)

    def add_unknown(self, key: Any, row: int = -1) -> None:
        self.unknown.setdefault(row, set()).add(key)

    def problems(self) -> list[Problem]:
        found = []
        if self.unknown:
            n = len(set().union(*self.unknown.values()))
            by_count: dict[int, list[int]] = {}
            for row, keys in self.unknown.items():
                by_count.setdefault(len(keys), []).append(row)
            for in_row, rows in sorted(by_count.items()):
                tied = tuple(sorted(r for r in rows if r >= 0))
                found.append(unknown_problem(n, self.rules.names, tied, in_row))
        for j in sorted(self.cells):
            rule, params = self.rules.type_problem(j)
            found.append(Problem(self.rules.names[j], rule, params, tuple(self.cells[j])))
        return found

    def raise_if_any(self) -> None:
        if self.cells or self.unknown:
            raise problems_error(self.problems())

    def check(self, X: np.ndarray) -> None:
        """Raise every problem of the request at once: the ones collected while building ``X`` and the spec's
        value rules on ``X`` (a value of the wrong type is not also reported as missing)."""
        found = self.rules.check(X)
        if not found and not self.cells and not self.unknown:
            return
        typed = {self.rules.names[j]: set(rows) for j, rows in self.cells.items()}
        kept = []
        for p in found:
            if p.rule == "required" and p.field in typed:
                rows = tuple(r for r in p.rows if r not in typed[p.field])
                if not rows:
                    continue
                p = Problem(p.field, p.rule, p.params, rows)
            kept.append(p)
        order = {n: j for j, n in enumerate(self.rules.names)}
        everything = self.problems() + kept
        everything.sort(key=lambda p: order.get(p.field, -1))
        raise problems_error(everything)


def _check_limit(n: int, max_rows: int) -> None:
    if n > max_rows:
        raise too_many_rows(max_rows)


def _unknown_name(key: str, lim: Limits) -> None:
    # Only keys that are not the model's reach here: the model's own names are short (Limits.for_model).
    if len(key) > lim.max_value_chars:
        raise value_too_long(lim.max_value_chars, "a field name")


def records(bad: Collector, rows: list[Any], lim: Limits, dl: Deadline, what: str = "record") -> np.ndarray:
    """A list of JSON objects (feature → value) → matrix. Absent keys are missing values; values of the wrong
    type are NaN in the matrix and recorded in ``bad``. (Each object's key count and duplicate keys were checked
    when the body was decoded: ``decode.check_objects``.)"""
    _check_limit(len(rows), lim.max_rows)
    allow_extra, longest = lim.allow_extra, lim.max_value_chars
    rules = bad.rules
    index, value, d = rules.index, rules.value, len(rules.names)
    nan = np.nan
    X = np.empty((len(rows), d))
    for i, rec in enumerate(rows):
        if not i & (CHECK_EVERY - 1):
            dl.check()
        if type(rec) is not dict:
            raise InputError(f"each {what} must be a JSON object mapping feature names to values", rule="object", row=i)
        row = [nan] * d
        for k, v in rec.items():
            j = index.get(k)
            if j is None:
                if len(k) > longest:  # inline: this runs for every other column of every row
                    _unknown_name(k, lim)
                if not allow_extra:
                    bad.add_unknown(k, i)
                continue
            x = value(j, v)
            if x is None:
                bad.add(j, i)
            else:
                row[j] = x
        X[i] = row
    return X


def _columns(bad: Collector, cols: dict[str, Any], lim: Limits, dl: Deadline) -> np.ndarray:
    rules = bad.rules
    lists = {k: (v if type(v) is list else [v]) for k, v in cols.items()}
    lengths = {len(v) for v in lists.values()}
    if len(lengths) > 1:
        raise InputError("all columns must have the same number of values")
    n = lengths.pop() if lengths else 0
    _check_limit(n, lim.max_rows)
    X = np.full((n, len(rules.names)), np.nan)
    for k, values in lists.items():
        j = rules.index.get(k)
        if j is None:
            _unknown_name(k, lim)
            if not lim.allow_extra:
                bad.add_unknown(k)
            continue
        dl.check()
        for i, v in enumerate(values):
            x = rules.value(j, v)
            if x is None:
                bad.add(j, i)
            else:
                X[i, j] = x
    return X


def _split(bad: Collector, doc: Any, lim: Limits, dl: Deadline) -> np.ndarray:
    if type(doc) is not dict:
        raise InputError("dataframe_split must be an object with 'columns' and 'data'")
    extra = set(doc) - {"columns", "data", "index"}
    if extra or "data" not in doc or "columns" not in doc:
        raise InputError("dataframe_split must have 'columns' and 'data' fields and optionally 'index'")
    columns, data = doc["columns"], doc["data"]
    if type(columns) is not list or type(data) is not list or not all(type(c) is str for c in columns):
        raise InputError("dataframe_split 'columns' must be a list of names and 'data' a list of rows")
    _check_limit(len(data), lim.max_rows)
    if len(columns) > lim.max_columns:
        raise too_many_columns(lim.max_columns, "columns in dataframe_split")
    if len(set(columns)) != len(columns):  # a list, so the JSON key check does not see it
        raise duplicate("dataframe_split column", first_repeated(columns), lim.nameable)
    rules = bad.rules
    targets = []
    for c in columns:
        j = rules.index.get(c)
        if j is None:
            _unknown_name(c, lim)
            if not lim.allow_extra:
                bad.add_unknown(c)
        targets.append(j)
    bad.raise_if_any()  # unknown columns: before reading any row
    pairs = [(pos, j) for pos, j in enumerate(targets) if j is not None]
    width, nan, d, value = len(columns), np.nan, len(rules.names), rules.value
    X = np.empty((len(data), d))
    for i, r in enumerate(data):
        if not i & (CHECK_EVERY - 1):
            dl.check()
        if type(r) is not list or len(r) != width:
            raise InputError("each row of dataframe_split 'data' must be a list with one value per column")
        row = [nan] * d
        for pos, j in pairs:
            x = value(j, r[pos])
            if x is None:
                bad.add(j, i)
            else:
                row[j] = x
        X[i] = row
    return X


PARAMS = ("contributions", "interval")  # the model's parameters (its signature's params schema)


def _params(params: Any, allow_extra: bool) -> dict[str, bool]:
    """The model's parameters, each true or false; anything else is refused unless extras are allowed."""
    if params is None:
        return {}
    if type(params) is not dict:
        raise InputError("params must be a JSON object")
    unknown = [k for k in params if k not in PARAMS]
    if unknown and not allow_extra:
        raise InputError(f"params: {len(unknown)} unknown parameter(s); the model's parameters are {', '.join(PARAMS)}")
    flags = {k: params.get(k, False) for k in PARAMS}
    for k, value in flags.items():
        if type(value) is not bool:
            raise InputError(f"params.{k}: must be true or false")
    return flags


def check_interval(model: ServedModel, interval: bool) -> None:
    """An interval asked of a version trained without the bootstrap ensemble is refused, naming the parameter."""
    if interval and getattr(model.risk, "ens_coef", None) is None:
        raise InputError("interval: " + RULES["no_interval"], problems=[Problem("interval", "no_interval", {})])


def json_to_matrix(bad: Collector, doc: Any, lim: Limits, dl: Deadline) -> tuple[np.ndarray, dict[str, bool]]:
    """A decoded MLflow JSON payload → (float matrix in feature order, the params' flags); values of the wrong
    type are recorded in ``bad``."""
    if type(doc) is not dict:
        raise InputError(f"{REQUIRED_INPUT_FORMAT}. Received a {type(doc).__name__}.")
    data, params = _split_data_and_params(doc)  # MLflow's own split of the envelope
    if len(data) != 1:
        # Only our own format names are repeated back; other keys are the client's and may be data.
        given = sorted(k for k in doc if k in SUPPORTED_FORMATS)
        raise InputError(f"{REQUIRED_INPUT_FORMAT}. Received {len(given)} of them: {given}")
    allow_extra = lim.allow_extra
    extra = set(doc) - SUPPORTED_FORMATS - {"params"}
    if extra and not allow_extra:
        raise InputError(f"{len(extra)} unexpected top-level field(s); expected one input format and optional params")
    flags = _params(params, allow_extra)
    ((fmt, payload),) = data.items()
    if fmt == DF_SPLIT:
        X = _split(bad, payload, lim, dl)
    elif fmt == DF_RECORDS:
        if type(payload) is not list:
            raise InputError("dataframe_records must be a list of records")
        X = records(bad, payload, lim, dl)
    elif fmt in (INSTANCES, INPUTS):
        if type(payload) is list:
            X = records(bad, payload, lim, dl)
        elif type(payload) is dict:
            X = _columns(bad, payload, lim, dl)
        else:
            raise InputError(f"{fmt} must be a list of records or an object of columns")
    else:  # pragma: no cover - SUPPORTED_FORMATS is the four above
        raise InputError(REQUIRED_INPUT_FORMAT)
    return X, flags


def frame_to_matrix(bad: Collector, df: Any, lim: Limits, names: list[str] | None = None) -> np.ndarray:
    """A DataFrame from CSV/Parquet (its columns checked by ``serving.decode``) → float matrix; text in a numeric
    column is recorded in ``bad`` (no coercion). ``names``: every column the body has, when ``df`` holds only the
    model's (Parquet's other columns are never decoded)."""
    allow_extra = lim.allow_extra
    _check_limit(len(df), lim.max_rows)
    rules = bad.rules
    X = np.full((len(df), len(rules.names)), np.nan)
    for c in df.columns if names is None else names:
        j = rules.index.get(c)
        if j is None:
            if not allow_extra:
                bad.add_unknown(c)
            continue
        X[:, j], wrong = rules.column(j, df[c])
        for i in np.flatnonzero(wrong).tolist():
            bad.add(j, i)
    return X


def as_records(out: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Column arrays → list of row dicts with plain Python values (what MLflow's records orient gives)."""
    keys = list(out)
    cols = [out[k].tolist() for k in keys]
    return [dict(zip(keys, vals, strict=True)) for vals in zip(*cols, strict=True)]
