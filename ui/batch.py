"""Batch scoring: read a clinic's CSV, validate each row against the served spec, score valid rows in chunks.

Validation mirrors the model's own rules (required, range, whole number, category) so the clinician sees every
problem, per row, before anything is sent; the API still validates and its 422 answers are reported too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ui import rules
from ui.api import ApiValidationError
from ui.spec import Feature

# What scoring adds to each row, named as the API names it (the machine-readable download keeps these names;
# ui/scored.py translates them for people). ``request_id`` and ``row`` name the prediction in the API's inference
# log: the key a confirmed outcome is sent with (ui/outcomes.py), so they keep these names in both downloads.
RESULT_COLUMNS = ["probability", "risk_level", "label", "model_version", "request_id", "row", "errors"]
KEY_COLUMNS = ("request_id", "row")


@dataclass
class Problem:
    row: int  # 1-based data row (the header is not counted), as a clinician counts rows in a spreadsheet
    field: str
    rule: str  # code translated by the page: missing_column, required, not_number, out_of_range, ...
    detail: str = ""  # the allowed categories; never the submitted value (ranges come from the spec)


@dataclass
class Validation:
    frame: pd.DataFrame  # the upload as read (strings), for the scored download
    values: pd.DataFrame  # parsed feature columns (float; categoricals as str), NaN where absent
    problems: list[Problem] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    duplicate_columns: list[str] = field(default_factory=list)  # features whose name matches several columns
    unknown_columns: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # feature name -> its column in ``frame``
    renamed_columns: list[tuple[str, str]] = field(default_factory=list)  # (header as read, name in the output)

    @property
    def invalid_rows(self) -> set[int]:
        return {p.row for p in self.problems if p.row > 0}

    @property
    def valid_index(self) -> list[int]:
        """0-based positions of the rows that can be scored."""
        if self.missing_columns or self.duplicate_columns:
            return []
        bad = self.invalid_rows
        return [i for i in range(len(self.frame)) if i + 1 not in bad]


def decode(data: bytes) -> str:
    """UTF-16 by its BOM (or, without one, by its NUL bytes); UTF-8 (with or without BOM) strictly; otherwise
    cp1252, Excel's default on Spanish Windows. Never replacement characters: the clinic's columns stay intact."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")  # the codec reads the BOM for the byte order and drops it
    head = data[:512]
    if head and b"\x00" in head:  # no BOM but NUL bytes: UTF-16 text of ASCII headers, high byte first or last
        if head[1::2].count(0) > len(head) // 4:
            return data.decode("utf-16-le")
        if head[0::2].count(0) > len(head) // 4:
            return data.decode("utf-16-be")
        raise ValueError("binary file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252")  # a byte cp1252 leaves undefined raises UnicodeDecodeError: unreadable


def read_csv(data: bytes) -> pd.DataFrame:
    """Read comma- or semicolon-separated files (Spanish-locale spreadsheets export `;` with decimal commas).

    A file with no patient rows (empty, blank lines, header only) gives an empty frame, not an error.
    """
    text = decode(data)
    try:
        sep = csv.Sniffer().sniff(text[:4096], delimiters=",;\t").delimiter
    except csv.Error:
        sep = ","
    # Parsed row by row (not pandas): a row with more fields than the header must never shift its values into
    # other columns, and a short row is padded. Rows with extra non-empty values are flagged by validate().
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=sep, skipinitialspace=True))
    except csv.Error as exc:
        raise ValueError(f"unreadable CSV: {type(exc).__name__}") from None
    rows = [r for r in rows if any(f.strip() for f in r)]  # blank lines are not patients
    if not rows:
        return pd.DataFrame()
    header, width = [h.strip() for h in rows[0]], len(rows[0])
    body = [(r + [""] * width)[:width] for r in rows[1:]]
    frame = pd.DataFrame(body, columns=header, dtype=object).replace({"": None})
    frame.attrs["extra_field_rows"] = [
        i for i, r in enumerate(rows[1:], start=1) if len(r) > width and any(f.strip() for f in r[width:])
    ]
    return frame


def _unique_headers(headers: list[str]) -> list[str]:
    """Blank headers become `columna_<position>` and repeated ones `<name>_2`, `<name>_3`...: pandas cannot write
    (nor the clinician tell apart) two columns with one name."""
    taken = {h for h in headers if h}
    out: list[str] = []
    for pos, h in enumerate(headers, start=1):
        base = h or f"columna_{pos}"
        new, k = base, 1
        while (new in out) or (new != h and new in taken):
            k += 1
            new = f"{base}_{k}"
        out.append(new)
    return out


def validate(frame: pd.DataFrame, features: list[Feature]) -> Validation:
    headers = [str(c).strip() for c in frame.columns]
    positions: dict[str, list[int]] = {}
    for i, h in enumerate(headers):
        positions.setdefault(h.lower(), []).append(i)
    unique = _unique_headers(headers)
    frame = frame.copy()  # keeps attrs (extra_field_rows)
    frame.columns = unique
    names = [f["name"] for f in features]
    keys = {n.lower() for n in names}
    result = Validation(frame=frame, values=pd.DataFrame(index=frame.index))
    result.unknown_columns = [u for h, u in zip(headers, unique, strict=True) if h.lower() not in keys]
    result.renamed_columns = [(h, u) for h, u in zip(headers, unique, strict=True) if h != u]
    for f in features:
        name, cols = f["name"], positions.get(f["name"].lower(), [])
        if len(cols) > 1:  # which one is right cannot be guessed: block the file, as for a missing column
            result.duplicate_columns.append(name)
            result.problems.append(Problem(0, name, "duplicate_column"))
            result.values[name] = np.nan
            continue
        if not cols:
            if not f.get("optional"):
                result.missing_columns.append(name)
                result.problems.append(Problem(0, name, "missing_column"))
            result.values[name] = np.nan
            continue
        result.columns[name] = unique[cols[0]]
        memo: dict[Any, tuple[Any, str | None]] = {}  # clinic data repeats values: check each one once
        checked = [memo[v] if v in memo else memo.setdefault(v, rules.check(f, v)) for v in frame.iloc[:, cols[0]]]
        numeric = f.get("type") != "categorical"
        result.values[name] = pd.Series(
            [np.nan if v is None and numeric else v for v, _ in checked],
            index=frame.index,
            dtype=float if numeric else object,
        )
        detail = ", ".join(str(c) for c in f.get("categories") or []) if not numeric else ""
        for i, (_, rule) in enumerate(checked):
            if rule is not None:
                result.problems.append(Problem(i + 1, name, rule, detail if rule == "not_category" else ""))
    for row in frame.attrs.get("extra_field_rows", []):  # 1-based data rows, as csv.reader counted them
        result.problems.append(Problem(row, "", "extra_fields"))
    result.problems.sort(key=lambda p: (p.row, names.index(p.field) if p.field in names else -1))
    return result


def records(values: pd.DataFrame, index: list[int]) -> list[dict[str, Any]]:
    """JSON-ready patients; a missing optional value is left out (the contract's "not measured")."""
    out = []
    for row in values.iloc[index].to_dict(orient="records"):
        rec: dict[str, Any] = {}
        for k, v in row.items():
            if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
                continue
            rec[k] = float(v) if isinstance(v, int | float | np.floating | np.integer) else str(v)
        out.append(rec)
    return out


def chunks(index: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(index), size):
        yield index[start : start + size]


def score(
    validation: Validation,
    call: Callable[[list[dict[str, Any]]], dict[str, Any]],
    chunk_rows: int,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """One row of RESULT_COLUMNS per uploaded row (same index); ``call`` sends one chunk to /predict and returns
    its 200 body. Kept apart from the upload so no clinic column is ever overwritten (ui/scored.py joins them).

    A chunk the API rejects (422) gets the API's messages in ``errors``; other API failures propagate.
    """
    out = pd.DataFrame(
        {c: [None] * len(validation.frame) for c in RESULT_COLUMNS}, index=validation.frame.index, dtype=object
    )
    index = validation.valid_index
    done = 0
    for part in chunks(index, chunk_rows):
        try:
            body = call(records(validation.values, part))
        except ApiValidationError as exc:
            for e in exc.errors:
                msg = f"{e.get('field', '')}: {e.get('message') or e.get('rule', '')}"
                r = e.get("row")  # 0-based within the chunk; None means the whole request
                targets = [part[r]] if isinstance(r, int) and 0 <= r < len(part) else part
                for i in targets:
                    _append_error(out, i, msg)
        else:
            version = str((body.get("model") or {}).get("version", ""))
            rid = body.get("request_id")
            for k, (i, pred) in enumerate(zip(part, body["predictions"], strict=True)):
                pos = out.index[i]
                out.at[pos, "probability"] = float(pred["probability"])
                out.at[pos, "risk_level"] = pred.get("risk_level")
                out.at[pos, "label"] = int(pred["label"])
                out.at[pos, "model_version"] = version
                if rid:  # the API logged this patient as row k of request rid
                    out.at[pos, "request_id"] = str(rid)
                    out.at[pos, "row"] = k
        done += len(part)
        if progress is not None:
            progress(done, len(index))
    return out


def add_errors(results: pd.DataFrame, problems: list[Problem], text: Callable[[Problem], str]) -> None:
    """The validation problems of the rows that were not sent, as ``text`` words them, into ``errors``."""
    for p in problems:
        if p.row > 0:
            _append_error(results, p.row - 1, text(p))


def _append_error(results: pd.DataFrame, i: int, message: str) -> None:
    pos = results.index[i]
    prev = results.at[pos, "errors"]
    results.at[pos, "errors"] = f"{prev}; {message}" if prev else message
