"""POST /feedback: the confirmed outcome of a prediction, stored in ``inference_outcome``.

One outcome: ``{"request_id": "...", "row": 0, "diabetes": true, "test": "hba1c", "test_date": "2026-05-01"}``
(``row`` defaults to 0; ``test`` is one of hba1c, fasting_glucose, ogtt). The prediction must be in the
inference log (404 otherwise). Sending an outcome again for the same prediction replaces it (a corrected
result).

Many outcomes (the app's outcomes CSV): a JSON array of such objects, at most ``MAX_ROWS``, within
``MAX_BODY_BYTES``. All are checked, then the valid ones whose prediction is logged are written in ONE
transaction; the answer is 200 with the counts ``stored``, ``not_found`` and ``invalid`` and, per item that was
not stored, ``{"index", "status": "invalid"|"not_found", "errors": [{"field", "rule"}]}``. An item is as
idempotent as a single outcome (the key is ``(request_id, row)``), so a file sent twice stores the same rows;
the same key twice in one array is refused for the later item (which of the two is right cannot be guessed).
Only the envelope is answered with a 4xx (not JSON, not an array of objects, empty, too many, too large).

Access: the ``feedback`` scope of the API's authentication, enforced where routes are registered. The outcome
records its caller (``serving.auth.caller_name``: a key's name or ``app:<user>``), never the credential.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from common import inference_db
from serving.inference_log import config

log = logging.getLogger("serving.feedback")
SCOPE = "feedback"
MAX_BODY = 10_000  # one outcome object
DEFAULT_MAX_ITEMS = 10_000  # MAX_ROWS, when the app has no settings (tests of the handler alone)
CHUNK = 500  # keys per look-up and rows per INSERT: well inside SQLite's bound on bound parameters


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    request_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    row: int = Field(default=0, ge=0)
    diabetes: bool
    test: Literal["hba1c", "fasting_glucose", "ogtt"]
    test_date: date = Field(strict=False)

    @field_validator("test_date")
    @classmethod
    def _not_future(cls, v: date) -> date:
        if v > datetime.now(UTC).date():
            raise ValueError("must not be in the future")
        return v


def _resp(doc: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for e in exc.errors(include_input=False, include_url=False):
        field = str(e["loc"][0]) if e["loc"] else "body"
        if e["type"] == "extra_forbidden":
            out.append({"field": "body", "rule": "unknown field (expected request_id, row, diabetes, test, test_date)"})
        else:
            out.append({"field": field, "rule": e["msg"]})
    return out


_engines: dict[tuple[int, str], sa.Engine] = {}


def _engine() -> sa.Engine:
    """One engine per worker process and database (a forked worker must not share its parent's pool)."""
    key = (os.getpid(), config().url)
    if key not in _engines:
        _engines[key] = inference_db.make_engine(key[1])
    return _engines[key]


def _store_many(outcomes: list[Outcome], caller: str) -> set[tuple[str, int]]:
    """Upsert, in one transaction, the outcomes whose prediction is in the log; returns the keys NOT found."""
    engine = _engine()
    log_t, out_t = inference_db.inference_log, inference_db.inference_outcome
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    ids = sorted({o.request_id for o in outcomes})
    now = datetime.now(UTC)
    with engine.begin() as conn:
        logged: set[tuple[str, int]] = set()
        for start in range(0, len(ids), CHUNK):
            q = sa.select(log_t.c.request_id, log_t.c.row).where(log_t.c.request_id.in_(ids[start : start + CHUNK]))
            logged.update((r, n) for r, n in conn.execute(q))
        rows = [{**o.model_dump(), "recorded_at": now, "caller": caller} for o in outcomes
                if (o.request_id, o.row) in logged]  # fmt: skip
        for start in range(0, len(rows), CHUNK):
            stmt = insert(out_t).values(rows[start : start + CHUNK])
            keep = {k: stmt.excluded[k] for k in ("diabetes", "test", "test_date", "recorded_at", "caller")}
            conn.execute(stmt.on_conflict_do_update(index_elements=["request_id", "row"], set_=keep))
    return {(o.request_id, o.row) for o in outcomes} - logged


async def _read(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is longer than ``limit`` (refused before reading it all when it says so)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def feedback(request: Request, caller: str = "anonymous") -> Response:
    if not config().enabled:
        return _resp({"error": "the inference log is off (INFERENCE_LOG=off): outcomes cannot be joined"}, 409)
    ct = request.headers.get("content-type") or ""
    if ct.split(";")[0].strip().lower() != "application/json":
        return _resp({"error": "Content-Type must be application/json", "errors": []}, 415)
    settings = getattr(request.app.state, "settings", None)
    limit = max(MAX_BODY, getattr(settings, "max_body_bytes", MAX_BODY))
    body = await _read(request, limit)
    if body is None:
        return _resp({"error": f"request body too large: the limit is {limit} bytes", "errors": []}, 413)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _resp({"errors": [{"field": "body", "rule": "body must be valid JSON"}]}, 400)
    state = request.scope.get("state") or {}
    who = state.get("caller") or getattr(state.get("principal"), "name", None) or caller
    if isinstance(doc, list):
        return await _many(doc, who, getattr(settings, "max_rows", DEFAULT_MAX_ITEMS))
    if not isinstance(doc, dict):
        return _resp({"errors": [{"field": "body", "rule": "body must be a JSON object or an array of objects"}]}, 400)
    if len(body) > MAX_BODY:
        return _resp({"error": f"request body too large: the limit is {MAX_BODY} bytes", "errors": []}, 413)
    try:
        outcome = Outcome.model_validate(doc)
    except ValidationError as exc:
        return _resp({"errors": _errors(exc)}, 422)
    try:
        missing = await run_in_threadpool(_store_many, [outcome], who)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("feedback not stored: database error (%s)", type(exc).__name__)
        return _resp({"error": "the outcome store is unavailable; retry later"}, 503)
    if missing:
        return _resp(
            {"errors": [{"field": "request_id", "rule": "no logged prediction with this request_id and row"}]}, 404
        )
    return _resp({"request_id": outcome.request_id, "row": outcome.row, "stored": True}, 200)


async def _many(items: list[Any], who: str, max_items: int) -> Response:
    """The bulk form: every item checked, the valid ones stored in one transaction, a result per problem."""
    if not items:
        return _resp({"errors": [{"field": "body", "rule": "the array of outcomes must not be empty"}]}, 400)
    if len(items) > max_items:
        return _resp({"error": f"too many outcomes: the limit is {max_items} per request", "errors": []}, 413)
    problems: list[dict[str, Any]] = []
    valid: list[tuple[int, Outcome]] = []
    first: dict[tuple[str, int], int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            errors = [{"field": "body", "rule": "each outcome must be a JSON object"}]
            problems.append({"index": i, "status": "invalid", "errors": errors})
            continue
        try:
            outcome = Outcome.model_validate(item)
        except ValidationError as exc:
            problems.append({"index": i, "status": "invalid", "errors": _errors(exc)})
            continue
        key = (outcome.request_id, outcome.row)
        if key in first:
            rule = f"same request_id and row as item {first[key]}"
            problems.append({"index": i, "status": "invalid", "errors": [{"field": "request_id", "rule": rule}]})
            continue
        first[key] = i
        valid.append((i, outcome))
    missing: set[tuple[str, int]] = set()
    if valid:
        try:
            missing = await run_in_threadpool(_store_many, [o for _, o in valid], who)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("feedback not stored: database error (%s)", type(exc).__name__)
            return _resp({"error": "the outcome store is unavailable; retry later (nothing was stored)"}, 503)
    rule = "no logged prediction with this request_id and row"
    for i, o in valid:
        if (o.request_id, o.row) in missing:
            problems.append({"index": i, "status": "not_found", "errors": [{"field": "request_id", "rule": rule}]})
    problems.sort(key=lambda p: p["index"])
    invalid = sum(p["status"] == "invalid" for p in problems)
    doc = {"stored": len(valid) - len(missing), "not_found": len(missing), "invalid": invalid, "problems": problems}
    return _resp(doc, 200)
