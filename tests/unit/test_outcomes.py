"""Confirmed outcomes and who asked, in process: the app's outcomes CSV checked row by row (ui/outcomes.py), the
logged-in user as the app sends it, the caller the API records (serving/auth.py), and POST /feedback's bulk form
against the real app (the session's registered model) with the inference log in a throwaway SQLite file."""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from serving import auth, inference_log, keys
from tests.conftest import EXAMPLE_PATIENT
from ui import api, batch, outcomes

TODAY = date(2026, 3, 10)
SECRET = "4711"  # appears only inside a bad cell: never in a problem


def check(text: str, lang: str = "es") -> outcomes.Check:
    return outcomes.validate(batch.read_csv(text.encode()), lang, TODAY)


# ---- the outcomes CSV ---------------------------------------------------------------------------------------
def test_valid_rows_become_the_api_outcomes() -> None:
    c = check(
        "request_id;row;diabetes;test;test_date\n"
        "abc;2;Sí;HbA1c;2026-03-01\n"
        "abc;;no;fasting glucose;01/02/2026\n"  # row empty: 0; day first in Spanish
        "def.1;0;1;OGTT;2026-03-10\n"
    )
    assert c.problems == [] and c.pending == 0 and c.rows == [1, 2, 3]
    assert c.outcomes == [
        {"request_id": "abc", "row": 2, "diabetes": True, "test": "hba1c", "test_date": "2026-03-01"},
        {"request_id": "abc", "row": 0, "diabetes": False, "test": "fasting_glucose", "test_date": "2026-02-01"},
        {"request_id": "def.1", "row": 0, "diabetes": True, "test": "ogtt", "test_date": "2026-03-10"},
    ]


def test_every_bad_cell_is_named_by_row_and_column_without_its_value() -> None:
    c = check(
        "Request_ID,diabetes,test,test_date,glucosa\n"  # no `row` column (0); other columns ignored
        f"a b,{SECRET},hba1c,2026-01-01,120\n"
        f"x1,yes,urine{SECRET},2026-01-01,120\n"
        f"x2,yes,ogtt,2026-13-01,120\n"
        "x3,yes,ogtt,2027-01-01,120\n"
        ",yes,ogtt,2026-01-01,120\n"
        "x4,,ogtt,2026-01-01,120\n"
        "x5,no,ogtt,2026-01-01,120\n"
        "x5,yes,hba1c,2026-01-02,120\n"  # the same prediction twice
        "x6,,,,120\n"  # no diagnosis yet: pending, not an error
    )
    assert [(p.row, p.field, p.rule) for p in c.problems] == [
        (1, "request_id", "bad_request_id"),
        (1, "diabetes", "bad_yes_no"),
        (2, "test", "bad_test"),
        (3, "test_date", "bad_date"),
        (4, "test_date", "future_date"),
        (5, "request_id", "required"),
        (6, "diabetes", "required"),
        (8, "request_id", "duplicate"),
    ]
    assert c.problems[-1].detail == "7"
    assert c.rows == [7] and c.pending == 1 and c.invalid_rows == 7 and c.total == 9
    assert SECRET not in repr(c.problems)


@pytest.mark.parametrize(
    ("cell", "lang", "expected"),
    [("2026-02-01", "en", date(2026, 2, 1)), ("01/02/2026", "es", date(2026, 2, 1)), ("01/02/2026", "en", None),
     ("31/02/2026", "es", None), ("2026-2-1", "es", None), ("ayer", "es", None)],
)  # fmt: skip
def test_dates_are_iso_or_day_first_in_spanish(cell: str, lang: str, expected: date | None) -> None:
    assert outcomes.parse_date(cell, lang) == expected


@pytest.mark.parametrize(("cell", "expected"), [("3", 3), ("3.0", 3), ("3,0", 3), ("", 0), ("-1", None), ("1.5", None),
                                                ("x", None)])  # fmt: skip
def test_row_is_a_whole_number(cell: str, expected: int | None) -> None:
    assert outcomes.parse_row(cell) == expected


def test_missing_and_repeated_columns_block_the_file() -> None:
    assert check("request_id,diabetes\nabc,yes\n").missing_columns == ["test", "test_date"]
    assert check("request_id,REQUEST_ID,diabetes,test,test_date\n").duplicate_columns == ["request_id"]


def test_api_answers_map_back_to_csv_rows() -> None:
    sent = outcomes.Sent()
    answer = {"stored": 1, "not_found": 1, "invalid": 1, "problems": [
        {"index": 0, "status": "not_found", "errors": [{"field": "request_id", "rule": "no logged prediction"}]},
        {"index": 2, "status": "invalid", "errors": [{"field": "test_date", "rule": "must not be in the future"}]},
    ]}  # fmt: skip
    outcomes.merge(sent, answer, [4, 7, 9])
    assert (sent.stored, sent.not_found, sent.invalid) == (1, 1, 1)
    assert [(p.row, p.field, p.rule) for p in sent.problems] == [(4, "request_id", "not_found"),
                                                                 (9, "test_date", "api_invalid")]  # fmt: skip


# ---- who asked ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "token"),
    [("ana", "ana"), ("José María", "Jose_Maria"), ("ana@clinica.es", "ana@clinica.es"),
     ("a\r\nX-Evil: 1", "a__X-Evil__1"), ("", None), (None, None), ("ñ" * 3, "nnn"), ("u" * 80, "u" * 64),
     ("中文", None)],
)  # fmt: skip
def test_the_app_sends_its_user_as_a_plain_token(user: str | None, token: str | None) -> None:
    assert api.user_token(user) == token


SERVICE = auth.Principal("service", frozenset(keys.SCOPES), "service")
KEY = auth.Principal("clinic-a", frozenset({"predict"}), "key")
JWT = auth.Principal("jwt:partner", frozenset({"predict"}), "jwt")


@pytest.mark.parametrize(
    ("principal", "header", "caller"),
    [(SERVICE, b"ana", "app:ana"), (auth.LOCAL, b"ana@clinica.es", "app:ana@clinica.es"), (SERVICE, None, "service"),
     (KEY, b"ana", "clinic-a"), (JWT, b"ana", "jwt:partner"), (SERVICE, b"a" * 65, "service"),
     (SERVICE, b"ana;drop", "service"), (SERVICE, b"", "service"), (SERVICE, "Jos\xe9".encode("latin-1"), "service")],
)  # fmt: skip
def test_only_the_app_credential_may_name_its_user(principal: auth.Principal, header: bytes | None,
                                                   caller: str) -> None:  # fmt: skip
    headers = [(b"authorization", b"Bearer x")] + ([(auth.USER_HEADER, header)] if header is not None else [])
    assert auth.caller_name(principal, headers) == caller


# ---- POST /feedback and the caller, through the real app ----------------------------------------------------
@pytest.fixture
def log_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process's inference log (and /feedback) pointed at a fresh SQLite file for one test."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    cfg = dataclasses.replace(inference_log.config(), enabled=True, url=url, spool_dir=tmp_path / "spool",
                              flush_s=0.02)  # fmt: skip
    monkeypatch.setattr(inference_log, "_config", cfg)
    monkeypatch.setattr(inference_log, "_writer", None)
    inference_log.setup()
    yield url
    inference_log.shutdown()


def logged(url: str, n: int, timeout_s: float = 10) -> list[dict[str, Any]]:
    """The log's rows once it holds ``n`` (the writer flushes off the request path)."""
    engine = sa.create_engine(url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM inference_log ORDER BY id"))]
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)
    finally:
        engine.dispose()


def joined(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = conn.execute(sa.text(
            "SELECT l.request_id, l.row, o.diabetes, o.test, o.test_date, o.caller FROM inference_log l "
            "JOIN inference_outcome o ON o.request_id = l.request_id AND o.row = l.row ORDER BY l.request_id, l.row"
        )).all()  # fmt: skip
    engine.dispose()
    return [tuple(r) for r in out]


def test_bulk_feedback_stores_in_one_go_and_reports_each_problem(client: Any, log_db: str) -> None:
    r = client.post("/predict", json=[EXAMPLE_PATIENT] * 3, headers={"X-Inference-User": "ana"})
    rid = r.json()["request_id"]
    rows = logged(log_db, 3)
    assert [(x["request_id"], x["row"], x["caller"]) for x in rows] == [(rid, i, "app:ana") for i in range(3)]
    base = {"request_id": rid, "diabetes": True, "test": "hba1c", "test_date": "2026-01-15"}
    items = [
        {**base, "row": 0},
        {**base, "row": 2, "diabetes": False, "test": "ogtt"},
        {**base, "request_id": "unknown-id"},
        {**base, "row": 1, "test": "urine"},
        {**base, "row": 0, "test": "ogtt"},  # the same prediction as item 0
        [1, 2],
        {**base, "row": 1, "glucosa": 180},  # an unknown field: refused, and its value never echoed
    ]
    r = client.post("/feedback", json=items, headers={"X-Inference-User": "ana"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["stored"], doc["not_found"], doc["invalid"]) == (2, 1, 4)
    assert [(p["index"], p["status"], p["errors"][0]["field"]) for p in doc["problems"]] == [
        (2, "not_found", "request_id"), (3, "invalid", "test"), (4, "invalid", "request_id"), (5, "invalid", "body"),
        (6, "invalid", "body"),
    ]  # fmt: skip
    assert "180" not in r.text and "urine" not in r.text
    want = [(rid, 0, 1, "hba1c", "2026-01-15", "app:ana"), (rid, 2, 0, "ogtt", "2026-01-15", "app:ana")]
    assert joined(log_db) == want
    # The same file again: the same rows, not new ones (idempotent on request_id and row).
    again = client.post("/feedback", json=items[:2])
    assert again.json() == {"stored": 2, "not_found": 0, "invalid": 0, "problems": []}
    assert [j[:5] for j in joined(log_db)] == [w[:5] for w in want] and joined(log_db)[0][5] == "local"
    # The single form is unchanged.
    one = client.post("/feedback", json={**base, "row": 1, "test": "fasting_glucose"})
    assert one.status_code == 200 and one.json() == {"request_id": rid, "row": 1, "stored": True}
    assert len(joined(log_db)) == 3


def request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "serving.requests"]


def test_a_reused_client_request_id_loses_no_rows(client: Any, log_db: str, caplog: pytest.LogCaptureFixture) -> None:
    """A client that sends the same X-Request-ID twice gets two predictions, both logged under our own ids;
    its id is kept beside ours in the request log line."""
    caplog.set_level(logging.INFO, logger="serving.requests")
    sent = [client.post(path, json=body, headers={"X-Request-ID": "client-7"})
            for path, body in (("/predict", [EXAMPLE_PATIENT] * 2), ("/invocations", {"inputs": [EXAMPLE_PATIENT]}),
                               ("/predict", EXAMPLE_PATIENT))]  # fmt: skip
    assert [r.status_code for r in sent] == [200, 200, 200]
    ids = [r.headers["x-request-id"] for r in sent]
    assert len(set(ids)) == 3 and "client-7" not in ids
    rows = logged(log_db, 4)
    assert [(x["request_id"], x["row"]) for x in rows] == [(ids[0], 0), (ids[0], 1), (ids[1], 0), (ids[2], 0)]
    by_id = {line["request_id"]: line for line in request_lines(caplog)}
    assert all(by_id[i]["client_request_id"] == "client-7" for i in ids)
    r = client.post("/predict", json=EXAMPLE_PATIENT, headers={"X-Request-ID": "not a token; 86.75"})
    line = request_lines(caplog)[-1]
    assert line["request_id"] == r.headers["x-request-id"] and line["client_request_id"] is None


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [(b"[]", 400, "must not be empty"), (b'"x"', 400, "array of objects"), (b"[", 400, "valid JSON")],
)
def test_bulk_feedback_envelope_errors(client: Any, log_db: str, body: bytes, status: int, says: str) -> None:
    r = client.post("/feedback", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and says in r.text


def test_bulk_feedback_is_bounded_by_max_rows(client: Any, log_db: str) -> None:
    limit = client.app.state.settings.max_rows  # 50 in the unit tier's app
    item = {"request_id": "a", "diabetes": True, "test": "ogtt", "test_date": "2026-01-01"}
    r = client.post("/feedback", json=[{**item, "row": i} for i in range(limit + 1)])
    assert r.status_code == 413 and f"the limit is {limit}" in r.text
    assert client.post("/feedback", json=[{**item, "row": i} for i in range(limit)]).json()["not_found"] == limit
    big = b"[" + b",".join([json.dumps(item).encode()] * 60_000) + b"]"
    assert client.post("/feedback", content=big, headers={"Content-Type": "application/json"}).status_code == 413


def test_an_ordinary_key_cannot_speak_for_an_app_user(client: Any, log_db: str, tmp_path: Path) -> None:
    """With authentication on: the app's service key names its user (``app:<user>``); a client key sending the
    same header is logged under its own name, in the inference log, the outcome and the request log alike."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    service_key = secrets.token_urlsafe(32)
    env = {"APP_DATABASE_URL": f"sqlite:///{tmp_path / 'keys.db'}", "API_SERVICE_KEY": service_key}
    key = keys.KeyStore(env["APP_DATABASE_URL"]).create("clinic-a", ["predict", "feedback"], None)
    app = create_app(client.app.state.settings, client.app.state.store, env)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("serving.requests").addHandler(handler)
    try:
        with TestClient(app) as c:
            as_app = {"Authorization": f"Bearer {service_key}", "X-Inference-User": "ana"}
            as_key = {"Authorization": f"Bearer {key}", "X-Inference-User": "ana", "X-Inference-Source": "app-batch"}
            r1 = c.post("/predict", json=EXAMPLE_PATIENT, headers=as_app)
            r2 = c.post("/invocations", json={"dataframe_records": [EXAMPLE_PATIENT]}, headers=as_key)
            r3 = c.post("/predict", json=EXAMPLE_PATIENT, headers={**as_app, "X-Inference-User": "ana;x"})
            rows = logged(log_db, 3)
            callers = {x["request_id"]: (x["caller"], x["source"]) for x in rows}
            assert callers == {
                r1.json()["request_id"]: ("app:ana", "api"),
                r2.headers["x-request-id"]: ("clinic-a", "api"),  # neither the user nor the page is taken from a key
                r3.json()["request_id"]: ("service", "api"),  # outside the token rule: ignored, not cleaned up
            }
            fb = {"request_id": r2.headers["x-request-id"], "diabetes": True, "test": "ogtt", "test_date": "2026-01-01"}
            assert c.post("/feedback", json=[fb], headers=as_key).json()["stored"] == 1
    finally:
        logging.getLogger("serving.requests").removeHandler(handler)
    assert joined(log_db)[0][5] == "clinic-a"
    logged_callers = [json.loads(x)["caller"] for x in lines if x.startswith("{")]
    assert logged_callers == ["app:ana", "clinic-a", "service", "clinic-a"]
    assert service_key not in "".join(lines) and key not in "".join(lines)
