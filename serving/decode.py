"""Request bodies → Python values, with the same rules on /invocations and /predict: content type (MLflow's
rules: UTF-8 only, no unknown parameters), size limits before anything is held in memory, and JSON, CSV and
Parquet decoding that never lets a parser's message (which can quote the input) reach the client."""

from __future__ import annotations

import csv
import json
from io import BytesIO, StringIO
from typing import Any

import orjson
from starlette.requests import Request

from common.validation import FeatureRules
from serving import mlflow_adapter as mlflow_internals
from serving.errors import InputError, too_many_rows

PARQUET_EXPANSION = 20  # decoded Parquet may be at most this many times MAX_BODY_BYTES
NOT_UTF8 = "Invalid input. Ensure that input is valid UTF-8."


def mime(content_type: str | None, allowed: list[str]) -> str:
    """The media type of a Content-Type header, by MLflow's rules (a missing header is a 415 here; MLflow
    answers 500)."""
    if not content_type:
        raise InputError(f"Content-Type header is required; supported types: {allowed}", status=415)
    parts = [p.strip() for p in content_type.split(";")]
    params = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in parts[1:] if p)}
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise InputError("The scoring server only supports UTF-8", status=415)
    if set(params) - {"charset"}:
        raise InputError(f"Unrecognized content type parameters: {sorted(set(params) - {'charset'})}", 415)
    media = parts[0].lower()
    if media not in allowed:
        raise InputError(f"This predictor only supports the following content types: {allowed}", status=415)
    return media


async def body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes before reading it when the length is declared and
    while streaming when it is not (chunked), so an oversized upload never sits in memory."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InputError("Content-Length must be a whole number")
        if int(declared) > limit:
            raise InputError(f"request body too large: the limit is {limit} bytes", status=413)
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(f"request body too large: the limit is {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_int(text: str) -> int | float:
    # Integers too long for a float's exact range are out of any feature's range anyway: as a float (inf when
    # beyond 1e308) they reach the range check instead of overflowing float() or Python's int-digit limit.
    return int(text) if len(text) <= 18 else float(text)


def loads(data: bytes) -> Any:
    """UTF-8 JSON → Python. Raises InputError (400) for anything else, including nesting too deep for the
    parser, never a 500."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    # MLflow's own client (json.dumps) writes NaN for missing values, which strict JSON parsers refuse; and
    # orjson refuses numbers beyond a double (1e400) or 64-bit integers, which are range errors, not syntax.
    # The standard library accepts them, so only such bodies pay for the slower parser. It is given text, not
    # bytes: on bytes it would also guess UTF-16/32, which the Content-Type rules refuse.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(NOT_UTF8, rule="json") from None
    try:
        return json.loads(text, parse_int=_parse_int)
    except (ValueError, RecursionError):
        raise InputError("Invalid input. Ensure that input is valid JSON.", rule="json") from None


def read_csv(rules: FeatureRules, data: bytes, max_rows: int) -> Any:
    """CSV with a header → DataFrame (pandas, categorical columns kept as text), with two checks first: every
    row has exactly the header's number of fields (pandas would silently make an extra first field the index,
    shifting every value one column), and the row count is within MAX_ROWS (before pandas builds anything).
    Messages name row numbers and counts only, never a value."""
    import pandas as pd

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(NOT_UTF8) from None
    unreadable = InputError("Invalid input. The body could not be parsed as CSV with a header.")
    try:
        width, rows = None, 0
        for fields in csv.reader(StringIO(text)):
            if not fields:  # a blank line, which pandas skips too
                continue
            if width is None:
                width = len(fields)
                continue
            rows += 1
            if rows > max_rows:
                raise too_many_rows(max_rows)
            if len(fields) != width:
                raise InputError(
                    f"Invalid input. CSV row {rows} has {len(fields)} fields but the header has {width}; "
                    "every row needs one value per header column."
                )
    except csv.Error:
        raise unreadable from None
    if width is None:
        raise unreadable
    # Categorical columns stay text ("1" is not a number there); all others as pandas infers them.
    dtype = {rules.names[j]: str for j in rules.categories}
    try:
        return pd.read_csv(StringIO(text), index_col=False, dtype=dtype or None)
    except Exception:  # noqa: BLE001 - pandas' message can quote the input: never passed on
        raise unreadable from None


def read_parquet(data: bytes, max_rows: int, max_body_bytes: int) -> Any:
    """Parquet → DataFrame (MLflow's reader), checking the row count and decoded size from the file's metadata
    first: a few hundred KB of compressed Parquet can decode to millions of rows and gigabytes."""
    import pyarrow.parquet as pq
    from mlflow.exceptions import MlflowException

    unreadable = InputError("Invalid input. The body could not be parsed as Parquet.")
    try:
        meta = pq.ParquetFile(BytesIO(data)).metadata
    except Exception:  # noqa: BLE001 - not Parquet (or a damaged footer)
        raise unreadable from None
    if meta.num_rows > max_rows:
        raise too_many_rows(max_rows)
    decoded = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        columns = sum(group.column(c).total_uncompressed_size for c in range(group.num_columns))
        decoded += max(group.total_byte_size, columns)
    if decoded > PARQUET_EXPANSION * max_body_bytes:
        raise InputError(
            f"Parquet data too large when decoded: the limit is {PARQUET_EXPANSION * max_body_bytes} bytes",
            status=413,
        )
    try:
        df = mlflow_internals.parse_parquet_input(BytesIO(data))
    except MlflowException:
        raise unreadable from None  # MLflow's message carries the parser's text, which can quote the input
    if len(df) > max_rows:  # metadata that under-reports rows
        raise too_many_rows(max_rows)
    return df
