"""What both engines share: the pinned model, Arrow columns → the model's float matrix with one reason per invalid
row (the model's own rules), the output columns, and the error-rate verdict."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from mlflow import MlflowClient

from pipeline.config import load_config

NUMBER = "must be a number"


class BatchError(RuntimeError):
    """A job that cannot run or must not publish its output; the message is one line, names no value."""


@dataclass
class Model:
    """A registered version pinned for the whole job (an alias that moves mid-job does not change the scores)."""

    uri: str  # pinned: models:/<name>/<version> when the input was a registry URI
    name: str
    version: str
    risk: Any  # the pyfunc's RiskModel (unwrap_python_model)

    @property
    def names(self) -> list[str]:
        return list(self.risk.names)

    def categories(self, name: str) -> list[str] | None:
        cats = self.risk.categories.get(name)
        return list(cats) if cats is not None else None


def load_model(model_uri: str) -> Model:
    name, version, uri = "", "", model_uri
    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/([^/]+))", model_uri)
    if m:
        name, alias, number = m.groups()
        client = MlflowClient()
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
        version, uri = str(mv.version), f"models:/{name}/{mv.version}"
    pyfunc = mlflow.pyfunc.load_model(uri, suppress_warnings=True)
    return Model(uri=uri, name=name or pyfunc.metadata.run_id or "", version=version, risk=pyfunc.unwrap_python_model())


def column_map(model: Model, config: str | None) -> dict[str, str]:
    """Feature name → input column: the dataset config's ``column`` where it names the feature, else the name."""
    mapping = {n: n for n in model.names}
    if config:
        for f in load_config(config).features:
            if f.name in mapping:
                mapping[f.name] = f.column or f.name
    return mapping


def check_columns(model: Model, mapping: dict[str, str], available: list[str], id_columns: list[str]) -> None:
    """Refuse up front an input without a required feature's or an id column (every row would fail)."""
    have = set(available)
    missing = [c for c in id_columns if c not in have]
    optional = dict(zip(model.names, model.risk.optional, strict=True))
    missing += [f"{mapping[n]} (feature {n})" for n in model.names if not optional[n] and mapping[n] not in have]
    if missing:
        raise BatchError(f"input has no column {', '.join(missing)}")


# ---- Arrow columns → float matrix + reasons -------------------------------------------------------------
def _numbers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """Float values (NaN = missing) and the rows holding something that is not a number (None if none)."""
    t = arr.type
    if pa.types.is_null(t):
        return np.full(len(arr), np.nan), None
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        arr = _blank_as_null(arr)
        try:
            return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), None
        except pa.ArrowInvalid:  # some cell is text: parse one by one, the rest of the column still scores
            pass
        text = arr.to_pylist()
        values = np.array([_parse(v) for v in text])
        bad = np.array([v is not None for v in text]) & np.isnan(values)
        return values, bad
    # Booleans, dates and the like are not numbers (no silent coercion, as in the API).
    return np.full(len(arr), np.nan), ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False))


def _blank_as_null(arr: pa.Array) -> pa.Array:
    """A blank text cell is a value not measured, as an empty CSV cell is (Parquet keeps it as "")."""
    blank = pc.equal(pc.utf8_trim_whitespace(arr), "")
    return pc.if_else(blank, pa.scalar(None, arr.type), arr) if pc.any(blank).as_py() else arr


def _parse(v: str | None) -> float:
    if v is None:
        return np.nan
    try:
        return float(pc.cast(pa.array([v]), pa.float64())[0].as_py())
    except (pa.ArrowInvalid, TypeError):
        return np.nan


def _codes(arr: pa.Array, categories: list[str]) -> np.ndarray:
    """Category codes as floats (NaN = missing, -1 = not a category, which the model's rule rejects)."""
    present = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_floating(arr.type) and pc.all(pc.fill_null(pc.equal(arr, pc.floor(arr)), True)).as_py():
        arr = pc.cast(arr, pa.int64())  # 1.0 and "1" are the same category, as in the dataset config
    if pa.types.is_integer(arr.type):
        arr = pc.cast(arr, pa.string())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return np.where(present, -1.0, np.nan)  # booleans, fractions, dates: never a category
    arr = _blank_as_null(arr)
    present = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    codes = pc.index_in(arr, value_set=pa.array(categories, pa.string()))
    out = pc.cast(codes, pa.float64()).to_numpy(zero_copy_only=False, writable=True)
    out[np.isnan(out) & present] = -1.0
    return out


def to_matrix(model: Model, columns: dict[str, pa.Array | None], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Input columns by feature name (None = absent) → (matrix in feature order, reason per row; "" = valid)."""
    X = np.full((n, len(model.names)), np.nan)
    not_numbers: dict[str, np.ndarray] = {}
    for j, name in enumerate(model.names):
        arr = columns.get(name)
        if arr is None:
            continue  # an absent optional column is "not measured"
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        cats = model.categories(name)
        if cats is not None:
            X[:, j] = _codes(arr, cats)
        else:
            X[:, j], bad = _numbers(arr)
            if bad is not None and bad.any():
                not_numbers[name] = bad
    errors = model.risk.row_errors(X)
    optional = model.risk.optional
    for name, bad in not_numbers.items():
        # Text left the cell empty: say "must be a number", not "is required".
        j, rows = model.names.index(name), np.flatnonzero(bad)
        required = f"{name}: is required"
        for i in rows:
            e = errors[i]
            if not optional[j] and required in e.split("; "):
                errors[i] = "; ".join(f"{name}: {NUMBER}" if r == required else r for r in e.split("; "))
            else:
                errors[i] = f"{e}; {name}: {NUMBER}" if e else f"{name}: {NUMBER}"
    return X, errors


# ---- output -------------------------------------------------------------------------------------------
def score_columns(model: Model, contributions: bool) -> list[pa.Field]:
    cols = [pa.field("probability", pa.float64()), pa.field("label", pa.int64()), pa.field("risk_level", pa.string())]
    if contributions:
        cols += [pa.field("logit", pa.float64()), pa.field("baseline", pa.float64())]
        cols += [pa.field(f"contrib_{n}", pa.float64()) for n in model.names]
    return cols


def output_schema(model: Model, ids: list[pa.Field], contributions: bool) -> pa.Schema:
    tail = [
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        pa.field("error", pa.string()),
    ]
    return pa.schema([*ids, *score_columns(model, contributions), *tail])


def score(model: Model, X: np.ndarray, errors: np.ndarray, contributions: bool) -> dict[str, pa.Array]:
    """The model's vectorised path over the valid rows; invalid rows get nulls and keep their reason."""
    invalid = errors != ""
    valid = ~invalid
    out = model.risk.predict_matrix(X if not invalid.any() else X[valid], contributions=contributions)
    arrays: dict[str, pa.Array] = {}
    for f in score_columns(model, contributions):
        values = out[f.name]
        if invalid.any():
            full = np.empty(len(X), dtype=values.dtype)
            full[valid] = values
            values = full
        arrays[f.name] = pa.array(values, type=f.type, mask=invalid if invalid.any() else None)
    arrays["error"] = (
        pa.array(np.where(invalid, errors, None), type=pa.string()) if invalid.any() else pa.nulls(len(X), pa.string())
    )
    return arrays


def now() -> datetime:
    return datetime.now(UTC)


# ---- verdict ----------------------------------------------------------------------------------------------
@dataclass
class Tally:
    rows: int = 0
    invalid: int = 0
    reasons: Counter = field(default_factory=Counter)  # "field: rule" → rows
    stopped: bool = False  # the job gave up before the end of the input

    def add(self, reasons: Iterable[str], rows: int) -> None:
        """Count a chunk of ``rows`` rows; ``reasons`` holds the error text of its invalid rows only."""
        self.add_counts(Counter(reasons), rows)

    def add_counts(self, counts: Mapping[str, int], rows: int) -> None:
        """Count ``rows`` rows of which ``counts[text]`` carry the error ``text``."""
        self.rows += rows
        for text, count in counts.items():
            self.invalid += count
            for reason in text.split("; "):
                self.reasons[reason] += count

    @property
    def rate(self) -> float:
        return self.invalid / self.rows if self.rows else 0.0

    def summary(self) -> str:
        top = "; ".join(f"{r} ({c})" for r, c in self.reasons.most_common())
        where = " (stopped early)" if self.stopped else ""
        return f"{self.invalid} of {self.rows} rows invalid{where} ({self.rate:.2%})" + (f": {top}" if top else "")


def metric_key(reason: str) -> str:
    """A reason as an MLflow metric name (letters, digits, _ - . / only)."""
    return "invalid_rows/" + re.sub(r"[^A-Za-z0-9_.-]+", "_", reason).strip("_")
