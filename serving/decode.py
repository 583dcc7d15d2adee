"""Request bodies → Python values, with the same rules on /invocations and /predict: content type (MLflow's
rules: UTF-8 only, no unknown parameters), size limits before anything is held in memory, and JSON, CSV and
Parquet decoding that never lets a parser's message (which can quote the input) reach the client.

Each format is checked against the request's ``Limits`` (rows, columns, characters per value, decoded bytes)
before its expensive parse, by what is cheap to know first:
- JSON: a count of ``{`` and ``[`` bounds the objects orjson would build (a 5 MB body of ``{}`` is 1.7 M dicts);
  after orjson, the objects the API reads are checked for their number of keys and for duplicate keys.
- CSV: each line's length is bounded before the csv module splits it (a 500,000-column header is refused on
  its first line, before csv or pandas build anything); then the header's width, names and duplicates, and each
  row's width and longest value, before pandas.
- Parquet: from the footer, before any data page is read: rows, columns, flat types only, duplicate names, and
  the decoded size of the fixed-width columns that will be decoded; text and binary columns are then read
  dictionary-encoded (never expanded: a 1.6 KB file can hold 10,000 copies of one 9,000-character string) to
  measure their longest value and their expanded size; only then are the model's own columns decoded (the others
  are known by name only, never decoded).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Collection, Iterator
from io import BytesIO, StringIO
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request

from common.validation import FeatureRules
from serving.errors import (
    Deadline,
    InputError,
    duplicate,
    first_repeated,
    too_many_columns,
    too_many_rows,
    value_too_long,
)

if TYPE_CHECKING:
    from serving.limits import Limits

NOT_UTF8 = "Invalid input. Ensure that input is valid UTF-8."
CHECK_EVERY = 1024  # CSV rows between deadline checks


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
    while streaming when it is not (chunked), so an oversized upload never sits in memory. How fast it must
    arrive is ``serving.limits.BodyGuard``'s rule."""
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


# ---- JSON -------------------------------------------------------------------------------------------------
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


def _counts(data: bytes, chars: bytes) -> list[int]:
    """How many times each byte of ``chars`` occurs in ``data``: bytes.count for a small body, numpy beyond (a
    tenth of the time on a megabyte)."""
    if len(data) < 65536:
        return [data.count(c) for c in chars.split()]
    import numpy as np

    arr = np.frombuffer(data, np.uint8)
    return [int(np.count_nonzero(arr == c[0])) for c in chars.split()]


VALUES_PER_ROW = 64  # JSON values per allowed row: the model's features and a clinic export's other columns


def json_body(data: bytes, lim: Limits) -> Any:
    """A JSON body → Python, within the limits checked on the bytes before parsing: at most two objects or
    arrays per allowed row (a record or a row, plus the envelope's few) and at most VALUES_PER_ROW values per
    allowed row; then the objects the API reads have at most MAX_COLUMNS keys and no key twice.

    What a parsed document costs is its objects: about 20 times their bytes for ``{}`` and 12 for ``"ab"`` (a
    5 MB body of short strings grew a worker by 105 MiB), so they are counted first. The counts over-count
    ('{', '[' and ',' inside strings; harmless: such bodies are rare and the bounds generous) and never
    under-count: every value after a container's first follows a comma."""
    braces, brackets, commas, colons = _counts(data, b"{ [ , :")
    containers = 2 * lim.max_rows + 64
    if braces + brackets > containers:
        raise InputError(
            f"too many JSON objects or arrays: at most {containers} for MAX_ROWS={lim.max_rows} rows", status=413
        )
    values = VALUES_PER_ROW * lim.max_rows + 1024
    if commas + braces + brackets > values:
        raise InputError(
            f"too many JSON values: at most {values} ({VALUES_PER_ROW} per row for MAX_ROWS={lim.max_rows})",
            status=413,
        )
    doc = loads(data)
    check_objects(doc, braces, colons, lim, data)
    return doc


def _objects(doc: Any) -> list[dict[str, Any]]:
    """The objects the API reads: the body itself, and the objects in it or in its arrays (the envelope, params,
    dataframe_split, records and patients, instances' columns)."""
    if type(doc) is list:
        return [d for d in doc if type(d) is dict]
    if type(doc) is not dict:
        return []
    found = [doc]
    for v in doc.values():
        if type(v) is dict:
            found.append(v)
        elif type(v) is list:
            found += [d for d in v if type(d) is dict]
    return found


def check_objects(doc: Any, braces: int, colons: int, lim: Limits, data: bytes) -> None:
    """At most MAX_COLUMNS keys per object, and no duplicate key anywhere in ``data`` (orjson, like every JSON
    parser here, keeps the last of two equal keys silently); ``braces`` and ``colons`` are counts of '{' and ':'
    in ``data``.

    Duplicates are found without a second parse in the usual case: each key written in the body is followed by
    one ':' and each object opens with one '{', and a parsed object keeps one key per distinct name. So when the
    objects found here are as many as the '{' in the body and hold as many keys as there are ':', every object
    was found and no key was dropped. Otherwise (a ':' or '{' inside a string, objects nested deeper, or a real
    duplicate) the body is parsed again, keeping every key."""
    objects = _objects(doc)
    # Each key takes at least 4 bytes ("":0,): a body shorter than that cannot hold an object over the limit.
    if len(data) > 4 * lim.max_columns and objects and max(map(len, objects)) > lim.max_columns:
        raise too_many_columns(lim.max_columns, "keys in a JSON object")
    if len(objects) == braces and sum(map(len, objects)) == colons:
        return
    _find_duplicate_key(data, lim)


class _Duplicate(Exception):
    def __init__(self, key: str):
        self.key = key


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(items)
    if len(obj) != len(items):
        seen: set[str] = set()
        for k, _ in items:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return obj


def _find_duplicate_key(data: bytes, lim: Limits) -> None:
    try:
        json.loads(data.decode("utf-8"), object_pairs_hook=_pairs, parse_int=_parse_int)
    except _Duplicate as dup:
        raise duplicate("JSON key", dup.key, lim.nameable) from None
    except (ValueError, RecursionError):  # pragma: no cover - the same text parsed a moment ago
        pass


# ---- CSV --------------------------------------------------------------------------------------------------
def _lines(text: str, record: list[int], lim: Limits) -> Iterator[str]:
    """The text's lines for csv.reader, refusing a record (which may span lines inside quotes) longer than
    ``record[1]`` characters before csv splits it. ``record[0]`` counts the current record's characters; the
    caller resets it after each record."""
    for line in StringIO(text):
        record[0] += len(line)
        if record[0] > record[1]:
            if line.count(",") + 1 > lim.max_columns:
                raise too_many_columns(lim.max_columns, "CSV columns")
            raise value_too_long(lim.max_value_chars, "a CSV value")
        yield line


def read_csv(rules: FeatureRules, data: bytes, lim: Limits, dl: Deadline) -> Any:
    """CSV with a header → DataFrame (pandas, categorical columns kept as text), after a pass with the csv
    module that checks what pandas would not: every line within what MAX_COLUMNS values of MAX_VALUE_CHARS can
    take (so no line is split into a million fields), the header's width and distinct names, every row with
    exactly the header's number of fields (pandas would silently make an extra first field the index, shifting
    every value one column), no value over MAX_VALUE_CHARS, and the row count within MAX_ROWS. Messages name
    row numbers, counts and limits only, never a value."""
    import pandas as pd

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(NOT_UTF8) from None
    unreadable = InputError("Invalid input. The body could not be parsed as CSV with a header.")
    longest = lim.max_value_chars
    per_value = 2 * longest + 3  # a value's characters, each quote doubled, its quotes and a comma
    record = [0, lim.max_columns * per_value]
    try:
        width, rows = None, 0
        for fields in csv.reader(_lines(text, record, lim)):
            chars, record[0] = record[0], 0
            if not fields:  # a blank line, which pandas skips too
                continue
            if chars > longest and max(map(len, fields)) > longest:  # a shorter line cannot hold a longer value
                raise value_too_long(longest, "a CSV value" if width else "a CSV column name")
            if width is None:
                width = len(fields)
                if width > lim.max_columns:
                    raise too_many_columns(lim.max_columns, "CSV columns")
                if len(set(fields)) != width:
                    raise duplicate("CSV column name", first_repeated(fields), lim.nameable)
                record[1] = width * per_value
                continue
            rows += 1
            if rows > lim.max_rows:
                raise too_many_rows(lim.max_rows)
            if len(fields) != width:
                raise InputError(
                    f"Invalid input. CSV row {rows} has {len(fields)} fields but the header has {width}; "
                    "every row needs one value per header column."
                )
            if not rows & (CHECK_EVERY - 1):
                dl.check()
    except csv.Error:
        raise unreadable from None
    if width is None:
        raise unreadable
    dl.check()
    # Categorical columns stay text ("1" is not a number there); all others as pandas infers them.
    dtype = {rules.names[j]: str for j in rules.categories}
    try:
        return pd.read_csv(StringIO(text), index_col=False, dtype=dtype or None)
    except Exception:  # noqa: BLE001 - pandas' message can quote the input: never passed on
        raise unreadable from None


# ---- Parquet ----------------------------------------------------------------------------------------------
# Bytes per value of each Parquet physical type once decoded (BYTE_ARRAY: measured, see below).
_WIDTH = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8, "INT96": 12}
# pandas holds these Arrow types as one Python object per value (bytes, Decimal, time): their cost per value.
_OBJECT_BYTES = 64


def _flat(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _flat(t.value_type)
    return not pa.types.is_nested(t) and (
        pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_temporal(t)
        or pa.types.is_null(t)
    )


def _as_objects(t: Any) -> bool:
    """Whether pandas holds this Arrow type's values as Python objects (text stays in Arrow memory)."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _as_objects(t.value_type)
    return (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_decimal(t)
        or pa.types.is_time(t)
    )


def _too_large(lim: Limits) -> InputError:
    return InputError(
        f"Parquet data too large when decoded: the limit is {lim.max_decoded_bytes} bytes (MAX_DECODED_BYTES)",
        status=413,
    )


def _check_footer(pf: Any, lim: Limits) -> None:
    """The file's shape, from the footer alone: rows, columns, names, flat types, metadata size."""
    meta, schema = pf.metadata, pf.schema_arrow
    if max(meta.num_rows, sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups))) > lim.max_rows:
        raise too_many_rows(lim.max_rows)
    names = schema.names
    if len(names) > lim.max_columns or meta.num_columns > lim.max_columns:
        raise too_many_columns(lim.max_columns, "Parquet columns")
    if len(set(names)) != len(names):
        raise duplicate("Parquet column name", first_repeated(names), lim.nameable)
    if max((len(n) for n in names), default=0) > lim.max_value_chars:
        raise value_too_long(lim.max_value_chars, "a Parquet column name")
    # Flat columns only: a list column can hold millions of values in a handful of rows.
    if meta.num_columns != len(names) or not all(_flat(f.type) for f in schema):
        raise InputError("Invalid input. Parquet columns must be flat (no list, struct or map columns).")
    kv = meta.metadata or {}  # pandas' own metadata is JSON that pandas parses: sized like the columns
    if sum(len(k) + len(v) for k, v in kv.items()) > 1024 * (len(names) + 16):
        raise InputError("Parquet key-value metadata too large for its columns", status=413)


def _index_columns(pf: Any) -> list[str]:
    """Columns that pandas makes the frame's index (written by ``DataFrame.to_parquet`` for an index that is not
    a plain range): not data columns, as in MLflow's reader."""
    try:
        index = (pf.schema_arrow.pandas_metadata or {}).get("index_columns", [])
    except ValueError:  # metadata that is not JSON: pandas ignores nothing, reads it as plain Arrow
        return []
    return [c for c in index if isinstance(c, str)]


def _footer_sizes(pf: Any, lim: Limits, decoded: Collection[str]) -> tuple[list[str], list[str], int]:
    """Returns the text and binary columns, whose values are measured next, those of them that are
    dictionary-encoded, and the decoded bytes of the other columns in ``decoded`` (the only ones ever decoded),
    refusing a file whose text columns' pages and decoded columns would already exceed MAX_DECODED_BYTES."""
    meta = pf.metadata
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    rows = max(meta.num_rows, sum(g.num_rows for g in groups))
    fixed, pages, text, dictionary = 0, 0, [], []
    for j, field in enumerate(pf.schema_arrow):
        col = pf.schema.column(j)
        physical = col.physical_type
        if physical == "BYTE_ARRAY":
            text.append(field.name)
            chunks = [(g.column(j), g.num_rows) for g in groups]
            if all(chunk.has_dictionary_page for chunk, _ in chunks):
                dictionary.append(field.name)
            for chunk, n in chunks:
                # Read next: dictionary-encoded, at most its pages (the dictionary and the indices) plus 4 bytes of
                # index per value; plain, its pages. A delta-encoded column rebuilds each value from the previous
                # one, up to the whole column's pages each: counted at that worst case.
                size = chunk.total_uncompressed_size
                pages += n * size if "DELTA_BYTE_ARRAY" in chunk.encodings else size + 4 * n
        elif physical == "FIXED_LEN_BYTE_ARRAY" and col.length > lim.max_value_chars:
            raise value_too_long(lim.max_value_chars, "a Parquet value")
        elif field.name in decoded:
            size = col.length if physical == "FIXED_LEN_BYTE_ARRAY" else _WIDTH.get(physical, 8)
            fixed += rows * (size + (_OBJECT_BYTES if _as_objects(field.type) else 0))
    if fixed + pages > lim.max_decoded_bytes:
        raise _too_large(lim)
    return text, dictionary, fixed


def _check_values(
    data: bytes, text: list[str], dictionary: list[str], pf: Any, decoded: int, lim: Limits, read: Collection[str]
) -> None:
    """The text and binary columns, read with those stored dictionary-encoded kept so (a value stored once stays
    once in memory): their longest value (characters for text, bytes for binary), and the size once expanded of
    those in ``read``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(BytesIO(data), columns=text, read_dictionary=dictionary)
    for name in text:
        extra = _OBJECT_BYTES if _as_objects(pf.schema_arrow.field(name).type) else 8  # an object, or an offset
        for chunk in table.column(name).chunks:
            values, rows = (chunk.dictionary, chunk.indices) if pa.types.is_dictionary(chunk.type) else (chunk, None)
            is_text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
            chars = pc.utf8_length(values) if is_text else pc.binary_length(values)
            nbytes = pc.binary_length(values)
            if rows is not None:
                chars, nbytes = pc.take(chars, rows), pc.take(nbytes, rows)
            if (pc.max(chars).as_py() or 0) > lim.max_value_chars:
                raise value_too_long(lim.max_value_chars, "a Parquet value")
            if name in read:
                decoded += (pc.sum(nbytes).as_py() or 0) + extra * len(chunk)
        if decoded > lim.max_decoded_bytes:
            raise _too_large(lim)


def read_parquet(data: bytes, lim: Limits, dl: Deadline, wanted: Collection[str]) -> tuple[Any, list[str]]:
    """Parquet → (DataFrame of the columns in ``wanted``, every column's name), after the footer's checks and the
    measure of its text columns (see the module's docstring). Read by pandas as MLflow's scoring server reads it
    (``pd.read_parquet``), but only the model's columns: any other is named from the footer and never decoded.
    The footer is the client's: a hand-written file can misstate its sizes, which pyarrow then follows, so the
    row count is checked again on the frame."""
    import pandas as pd
    import pyarrow.parquet as pq

    unreadable = InputError("Invalid input. The body could not be parsed as Parquet.")
    try:
        pf = pq.ParquetFile(BytesIO(data))
        pf.schema_arrow  # noqa: B018 - a footer pyarrow cannot turn into a schema is unreadable
    except Exception:  # noqa: BLE001 - not Parquet (or a damaged footer)
        raise unreadable from None
    _check_footer(pf, lim)
    index = _index_columns(pf)
    names = [n for n in pf.schema_arrow.names if n not in index]
    read = [n for n in names if n in wanted]
    text, dictionary, fixed = _footer_sizes(pf, lim, {*read, *index})
    dl.check()
    try:
        if text:
            _check_values(data, text, dictionary, pf, fixed, lim, {*read, *index})
            dl.check()
        # With no column to decode pandas would return no rows: the footer's row count, every feature missing.
        df = pd.read_parquet(BytesIO(data), columns=read) if read else pd.DataFrame(index=range(pf.metadata.num_rows))
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - pyarrow's and pandas' messages can quote the input
        raise unreadable from None
    if len(df) > lim.max_rows:  # metadata that under-reports rows
        raise too_many_rows(lim.max_rows)
    return df, names
