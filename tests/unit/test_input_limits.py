"""Abuse limits that hold before parsing (issue 8, item 5), in process: columns, characters per value, Parquet's
footer and decoded size, duplicate keys and column names, the body read timeout and buffer, the request timeout
over parsing, and a client that disconnects. Through the real app (the ``client`` fixture: MAX_ROWS=50,
MAX_BODY_BYTES=20000, the other limits at their defaults) for the HTTP answers, and through ``serving.decode`` /
``serving.limits`` directly for what needs other limits. The real server under attack:
tests/integration/test_abuse_limits.py."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.requests import Request

from serving import decode
from serving.errors import Deadline, InputError
from serving.limits import HEAVY, BodyGuard, Limits, bounded
from tests.validation_cases import example

JSON_HDR = {"Content-Type": "application/json"}
CSV_HDR = {"Content-Type": "text/csv"}
PARQUET_HDR = {"Content-Type": "application/vnd.apache.parquet"}


@pytest.fixture(scope="module")
def good(client: Any) -> dict[str, Any]:
    return example(client.app.state.store.current.spec["features"])


@pytest.fixture(scope="module")
def lim(client: Any) -> Limits:
    return client.app.state.store.current.prepared["limits"]


def _parquet(table: pa.Table, **kw: Any) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd", **kw)
    return out.getvalue()


def _mlflow_error(r: Any, status: int, code: str, *words: str) -> str:
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["error_code"] == code, doc
    for w in words:
        assert w in doc["message"], doc["message"]
    return doc["message"]


# ---- duplicate keys and column names ---------------------------------------------------------------------
def _obj(*members: str) -> str:
    """A JSON object written member by member (a dict cannot hold a key twice)."""
    return "{" + ", ".join(members) + "}"


def test_duplicate_json_keys_are_a_400_naming_the_key_and_the_rule(client: Any, good: dict[str, Any]) -> None:
    row = json.dumps(good)[1:-1]
    records = '"dataframe_records": [' + _obj(row) + "]"
    cases = {
        "in a record": _obj('"dataframe_records": [' + _obj(row, '"glucosa": 90') + "]"),
        "in the envelope": _obj(records, records),
        "in params": _obj(records, '"params": {"interval": false, "interval": true}'),
        "in instances' columns": '{"inputs": {"glucosa": [90], "glucosa": [91]}}',
    }
    names = {"in a record": "glucosa", "in the envelope": "dataframe_records", "in params": "interval"}
    for case, body in cases.items():
        r = client.post("/invocations", content=body, headers=JSON_HDR)
        message = _mlflow_error(r, 400, "BAD_REQUEST", "duplicate JSON key", "each may appear only once")
        if case in names:
            assert f"'{names[case]}'" in message, (case, message)
    split = {"dataframe_split": {"columns": [*good, "glucosa"], "data": [[*good.values(), 90]]}}
    r = client.post("/invocations", json=split)
    _mlflow_error(r, 400, "BAD_REQUEST", "duplicate dataframe_split column 'glucosa'")


def test_a_clients_own_duplicate_key_is_refused_without_being_named(client: Any, good: dict[str, Any]) -> None:
    row = json.dumps(good)[1:-1]
    body = _obj('"dataframe_records": [' + _obj(row, '"SECRETKEY": 1', '"SECRETKEY": 2') + "]")
    message = _mlflow_error(client.post("/invocations", content=body, headers=JSON_HDR), 400, "BAD_REQUEST")
    assert "duplicate JSON key" in message and "SECRETKEY" not in message


def test_predict_duplicate_key_entry_in_both_languages(client: Any, good: dict[str, Any]) -> None:
    body = _obj(json.dumps(good)[1:-1], '"edad": 30')
    for lang, text in (("es", "clave repetida"), ("en", "duplicate key")):
        r = client.post(f"/predict?lang={lang}", content=body, headers=JSON_HDR)
        assert r.status_code == 400, r.text
        (entry,) = r.json()["errors"]
        assert entry["field"] == "body" and text in entry["message"]
        assert entry["rule"] == "duplicate key in a JSON object: each field may appear only once"


def test_duplicate_check_has_no_false_alarm_when_a_string_holds_colons(client: Any, good: dict[str, Any]) -> None:
    # ':' and '{' inside a string (here the ignored dataframe_split index) send the check to its exact path.
    split = {"dataframe_split": {"columns": list(good), "data": [list(good.values())], "index": ["a:{b}:c"]}}
    assert client.post("/invocations", json=split).status_code == 200


def test_duplicate_keys_are_found_at_any_depth(lim: Limits) -> None:
    for body in (
        b'{"dataframe_split": {"columns": [], "data": [], "index": [{"a": 1, "a": 2}]}}',
        b'[{"x": {"y": {"z": 1, "z": 2}}}]',
        b'{"a": 1, "b": "x:y", "a": 2}',
    ):
        with pytest.raises(InputError) as err:
            decode.json_body(body, lim)
        assert err.value.rule == "duplicate" and err.value.status == 400
    assert decode.json_body(b'{"a": {"a": {"a": 1}}, "b": "a:a"}', lim)  # the same name in different objects


def test_duplicate_csv_and_parquet_column_names(client: Any, good: dict[str, Any]) -> None:
    header = ",".join([*good, "glucosa"])
    values = ",".join(str(v) for v in [*good.values(), 90])
    r = client.post("/invocations", content=f"{header}\n{values}\n", headers=CSV_HDR)
    _mlflow_error(r, 400, "BAD_REQUEST", "duplicate CSV column name 'glucosa'")
    arrays = [pa.array([v]) for v in good.values()] + [pa.array([90.0])]
    table = pa.Table.from_arrays(arrays, names=[*good, "glucosa"])  # Arrow allows it; pandas would rename
    r = client.post("/invocations", content=_parquet(table), headers=PARQUET_HDR)
    _mlflow_error(r, 400, "BAD_REQUEST", "duplicate Parquet column name 'glucosa'")


# ---- columns and characters per value --------------------------------------------------------------------
def test_too_many_columns_in_every_format(client: Any, good: dict[str, Any], lim: Limits) -> None:
    n = lim.max_columns + 1  # 1000 + 1: the default
    names = [f"c{i}" for i in range(n)]
    r = client.post("/invocations", content=",".join(names) + "\n" + ",".join("1" * n) + "\n", headers=CSV_HDR)
    _mlflow_error(r, 413, "REQUEST_LIMIT_EXCEEDED", "too many CSV columns", f"limit is {lim.max_columns}")
    record = {**good, **{k: 1 for k in names}}
    r = client.post("/invocations", content=json.dumps({"dataframe_records": [record]}), headers=JSON_HDR)
    _mlflow_error(r, 413, "REQUEST_LIMIT_EXCEEDED", "too many keys in a JSON object", "MAX_COLUMNS")
    r = client.post("/invocations", json={"dataframe_split": {"columns": names, "data": [[1] * n]}})
    _mlflow_error(r, 413, "REQUEST_LIMIT_EXCEEDED", "too many columns in dataframe_split")
    with pytest.raises(InputError) as err:  # 1,001 Parquet columns take more than this client's 20 KB
        decode.read_parquet(_parquet(pa.table({k: pa.array([1.0]) for k in names})), lim, Deadline(10), {})
    assert err.value.status == 413 and "too many Parquet columns" in err.value.message
    r = client.post("/predict?lang=en", json=record)
    assert r.status_code == 413
    assert r.json()["errors"][0]["rule"] == f"too many fields in an object: the limit is {lim.max_columns}"


def test_values_and_names_longer_than_max_value_chars(client: Any, good: dict[str, Any], lim: Limits) -> None:
    long = "x" * (lim.max_value_chars + 1)
    header, values = ",".join(good), ",".join(str(v) for v in good.values())
    cases = [
        (f"{header},note\n{values},{long}\n", CSV_HDR, "a CSV value is longer than"),
        (f"{header},{long}\n{values},1\n", CSV_HDR, "a CSV column name is longer than"),
        (f'{header},note\n{values},"{long.replace("x", ",")}"\n', CSV_HDR, "a CSV value is longer than"),
        (json.dumps({"dataframe_records": [{**good, long: 1}]}), JSON_HDR, "a field name is longer than"),
        (json.dumps({"dataframe_split": {"columns": [*good, long], "data": [[*good.values(), 1]]}}), JSON_HDR, "name"),
    ]
    for body, headers, text in cases:
        r = client.post("/invocations", content=body, headers=headers)
        message = _mlflow_error(r, 413, "REQUEST_LIMIT_EXCEEDED")
        assert text in message and f"{lim.max_value_chars} characters (MAX_VALUE_CHARS)" in message, message
        assert long not in message
    short = "x" * lim.max_value_chars  # exactly the limit is fine (then the unknown column is the error)
    r = client.post("/invocations", content=f"{header},note\n{values},{short}\n", headers=CSV_HDR)
    _mlflow_error(r, 400, "INVALID_PARAMETER_VALUE", "1 unknown column")
    r = client.post("/predict?lang=es", json={**good, long: 1})
    assert r.status_code == 413 and "más de 256 caracteres" in r.json()["errors"][0]["message"]


def test_a_csv_line_is_never_split_into_more_fields_than_the_limits_allow(lim: Limits) -> None:
    from common.validation import FeatureRules

    rules = FeatureRules([{"name": "a", "type": "numeric"}, {"name": "b", "type": "numeric"}])
    # A 2-column header, then a 1 MB line of commas: refused by its length before csv builds a million fields.
    body = b"a,b\n1,2\n" + b"," * 1_000_000 + b"\n"
    with pytest.raises(InputError) as err:
        decode.read_csv(rules, body, lim, Deadline(10))
    assert err.value.status == 413 and "CSV columns" in err.value.message


# ---- Parquet: from the footer, before decoding -----------------------------------------------------------
def test_parquet_bomb_is_refused_without_expanding_it(client: Any, lim: Limits) -> None:
    # 50 copies of a 9,000-character string: a few hundred bytes of zstd that decode to 450 KB (the integration
    # test sends 10,000 of them, 90 MB).
    bomb = _parquet(pa.table({"glucosa": pa.array(["x" * 9000] * 50)}))
    assert len(bomb) < 2000
    r = client.post("/invocations", content=bomb, headers=PARQUET_HDR)
    _mlflow_error(r, 413, "REQUEST_LIMIT_EXCEEDED", "a Parquet value is longer than 256 characters")


@pytest.mark.parametrize(
    "table, kw, status, text",
    [
        (pa.table({"glucosa": pa.array([[1.0] * 1000] * 50)}), {}, 400, "must be flat"),
        (pa.table({"glucosa": pa.array([{"a": 1.0}] * 50)}), {}, 400, "must be flat"),
        (pa.table({"k": pa.array([{"a": 1}] * 50, pa.map_(pa.string(), pa.int64()))}), {}, 400, "must be flat"),
        (pa.table({"b": pa.array([b"x" * 300] * 50, pa.binary(300))}), {}, 413, "a Parquet value is longer"),
        (pa.table({"b": pa.array([b"x" * 300] * 50)}), {}, 413, "a Parquet value is longer"),
        (pa.table({"x" * 300: pa.array([1.0] * 50)}), {}, 413, "a Parquet column name is longer"),
        # plain pages (no dictionary): their decoded size is in the footer; 50 x 200 chars x 20 cols = 200 KB
        (pa.table({f"c{i}": pa.array(["y" * 200] * 50) for i in range(20)}), {"use_dictionary": False}, 413, "decoded"),
        # dictionary pages: measured after a read that does not expand them; 20 x 50 x 200 chars = 200 KB
        (pa.table({f"c{i}": pa.array(["y" * 200] * 50) for i in range(20)}), {}, 413, "decoded"),
        # delta byte array rebuilds each value from the previous one: counted at its worst case
        (
            pa.table({"c": pa.array([f"{i:03d}" * 60 for i in range(50)])}),
            {"use_dictionary": False, "column_encoding": {"c": "DELTA_BYTE_ARRAY"}},
            413,
            "decoded",
        ),
        (pa.table({f"c{i}": pa.array([1.0] * 50) for i in range(400)}), {}, 413, "decoded"),
    ],
    ids=["list", "struct", "map", "fixed-binary", "binary", "name", "plain", "dictionary", "delta", "wide-numbers"],
)
def test_parquet_limits_for_every_column_type(table: pa.Table, kw: dict, status: int, text: str, lim: Limits) -> None:
    small = Limits(50, 1000, 256, 150_000, True, lim.nameable)  # MAX_DECODED_BYTES=150 KB, extra columns allowed
    wanted = {*table.column_names}  # as if every column were the model's (only those are decoded)
    with pytest.raises(InputError) as err:
        decode.read_parquet(_parquet(table, **kw), small, Deadline(10), wanted)
    assert err.value.status == status and text in err.value.message, err.value.message


def test_parquet_columns_other_than_the_models_are_never_decoded(lim: Limits) -> None:
    # 400 numeric columns of 50 rows (160 KB decoded) would break a 150 KB limit, but only the model's are read.
    table = pa.table({"glucosa": pa.array([148.0] * 50), **{f"c{i}": pa.array([1.0] * 50) for i in range(400)}})
    small = Limits(50, 1000, 256, 150_000, True, lim.nameable)
    df, names = decode.read_parquet(_parquet(table), small, Deadline(10), {"glucosa"})
    assert list(df.columns) == ["glucosa"] and len(df) == 50 and len(names) == 401


def test_parquet_written_by_pandas_keeps_its_index_out_of_the_columns(client: Any, good: dict[str, Any]) -> None:
    import pandas as pd

    frame = pd.DataFrame([good, good], index=["p1", "p2"])  # stored as the column __index_level_0__
    r = client.post("/invocations", content=frame.to_parquet(), headers=PARQUET_HDR)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2, r.text
    r = client.post("/invocations", content=frame[[]].to_parquet(), headers=PARQUET_HDR)  # no feature at all
    _mlflow_error(r, 400, "INVALID_PARAMETER_VALUE", "is required (rows: 2)")


# ---- JSON: objects counted before parsing ----------------------------------------------------------------
def test_json_objects_are_counted_before_parsing(client: Any, lim: Limits) -> None:
    body = b"[" + b"{}," * (2 * lim.max_rows + 64) + b"{}]"  # 165 objects for MAX_ROWS=50: more than allowed
    r = client.post("/invocations", content=body, headers=JSON_HDR)
    _mlflow_error(r, 413, "REQUEST_LIMIT_EXCEEDED", "too many JSON objects or arrays")


# ---- limits follow the served model ----------------------------------------------------------------------
def test_limits_are_never_below_what_the_model_needs() -> None:
    from common.validation import FeatureRules
    from serving.settings import Settings

    name = "n" * 40
    rules = FeatureRules(
        [{"name": f"f{i}", "type": "numeric"} for i in range(12)]
        + [{"name": name, "type": "categorical", "categories": ["c" * 300]}]
    )
    lim = Limits.for_model(Settings.from_env({"MAX_COLUMNS": "5", "MAX_VALUE_CHARS": "16"}), rules)
    assert (lim.max_columns, lim.max_value_chars) == (13, 300)
    assert name in lim.nameable and "dataframe_records" in lim.nameable


# ---- the body's arrival, the request timeout, disconnects ------------------------------------------------
async def _echo(scope: dict, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _run(guard: BodyGuard, messages: list[tuple[float, dict]]) -> tuple[Any, float]:
    """Run one request through ``guard`` with a client that sends ``messages`` after the given delays."""

    async def main() -> tuple[Any, float]:
        queue = list(messages)

        async def receive() -> dict:
            if not queue:
                await asyncio.sleep(3600)
            delay, message = queue.pop(0)
            await asyncio.sleep(delay)
            return message

        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        t0 = time.monotonic()
        try:
            await guard({"type": "http", "method": "POST"}, receive, send)
        except InputError as err:
            return err, time.monotonic() - t0
        return sent, time.monotonic() - t0

    return asyncio.run(main())


def test_a_slow_body_gets_408_at_the_read_timeout_and_the_connection_closes() -> None:
    guard = BodyGuard(_echo, read_timeout_s=0.5, buffer_bytes=10_000)
    chunk = {"type": "http.request", "body": b"x", "more_body": True}
    err, elapsed = _run(guard, [(0.1, chunk)] * 100)  # a byte every 0.1 s: 10 s for the whole body
    assert isinstance(err, InputError) and err.status == 408 and err.headers == {"Connection": "close"}
    assert "BODY_READ_TIMEOUT_S" in err.message and 0.5 <= elapsed < 0.5 + BodyGuard.SWEEP_S + 0.3
    assert guard.buffered == 0 and not guard.waiting  # released with the request
    sent, _ = _run(guard, [(0.1, chunk), (0.1, {"type": "http.request", "body": b"y", "more_body": False})])
    assert sent[1]["body"] == b"xy"  # in time: untouched


def test_bodies_in_progress_share_a_buffer_budget() -> None:
    guard = BodyGuard(_echo, read_timeout_s=5, buffer_bytes=1000)
    part = {"type": "http.request", "body": b"x" * 600, "more_body": True}
    err, _ = _run(guard, [(0, part), (0, part)])
    assert isinstance(err, InputError) and err.status == 503 and err.headers["Retry-After"] == "1"
    assert guard.buffered == 0
    whole = {"type": "http.request", "body": b"x" * 1500, "more_body": False}
    sent, _ = _run(guard, [(0, whole)])  # a body that arrived whole is already held: never refused for it
    assert sent[0]["status"] == 200


def test_parsing_runs_within_the_request_timeout_and_the_loop_stays_free() -> None:
    release = threading.Event()

    def stuck_parser() -> str:  # a parser that ignores the deadline (a pandas call, say)
        release.wait(10)
        return "late"

    async def main() -> tuple[InputError, float, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        dl, t0 = Deadline(0.3), time.monotonic()
        try:
            await bounded(request, dl, True, stuck_parser)
        except InputError as err:
            elapsed = time.monotonic() - t0
            task.cancel()
            release.set()
            return err, elapsed, ticks
        raise AssertionError("no 504")

    request = Request({"type": "http", "state": {}})
    err, elapsed, ticks = asyncio.run(main())
    assert err.status == 504 and 0.3 <= elapsed < 0.6
    assert ticks >= 15  # the event loop (other requests, gunicorn's heartbeat) kept running meanwhile
    assert request.scope["state"] == {HEAVY: True}  # memory is given back when the request ends
    assert asyncio.run(bounded(request, Deadline(5), False, threading.get_ident)) == threading.get_ident()


def test_a_client_that_disconnects_mid_upload_is_499_not_an_error(client: Any, caplog: Any) -> None:
    """The app called as uvicorn calls it when the client goes away after part of the body."""
    app = client.app
    messages = [
        {"type": "http.request", "body": b'{"dataframe_records": [', "more_body": True},
        {"type": "http.disconnect"},
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/invocations",
        "raw_path": b"/invocations",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"5000")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    before = client.get("/metrics").text
    with caplog.at_level(logging.DEBUG):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 499  # uvicorn drops it: nobody is there to receive it
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text and "unhandled" not in caplog.text
    after = client.get("/metrics").text
    line = 'serving_requests_total{method="POST",route="/invocations",status="%s"}'
    count = lambda text, s: next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(line % s)), 0.0)  # noqa: E731
    assert count(after, "499") == count(before, "499") + 1
    assert count(after, "500") == count(before, "500")
