"""POST /feedback: the confirmed outcome of a prediction, stored in ``inference_outcome``.

Body: ``{"request_id": "...", "row": 0, "diabetes": true, "test": "hba1c", "test_date": "2026-05-01"}``
(``row`` defaults to 0; ``test`` is one of hba1c, fasting_glucose, ogtt). The prediction must be in the
inference log (404 otherwise). Sending an outcome again for the same prediction replaces it (a corrected
result). Access: the ``feedback`` scope of the API's authentication, enforced where routes are registered.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from serving import inference_db
from serving.inference_log import config

log = logging.getLogger("serving.feedback")
SCOPE = "feedback"
MAX_BODY = 10_000


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


_engine: sa.Engine | None = None
_engine_pid = 0


def _store(outcome: Outcome, caller: str) -> bool:
    """Upsert the outcome; False when the prediction is not in the log."""
    import os

    global _engine, _engine_pid
    if _engine is None or _engine_pid != os.getpid():
        _engine, _engine_pid = inference_db.make_engine(config().url), os.getpid()
    log_t, out_t = inference_db.inference_log, inference_db.inference_outcome
    with _engine.begin() as conn:
        found = conn.execute(
            sa.select(log_t.c.id).where(log_t.c.request_id == outcome.request_id, log_t.c.row == outcome.row)
        ).first()
        if found is None:
            return False
        values = {**outcome.model_dump(), "recorded_at": datetime.now(UTC), "caller": caller}
        if _engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(out_t).values(values)
        keep = {k: stmt.excluded[k] for k in ("diabetes", "test", "test_date", "recorded_at", "caller")}
        conn.execute(stmt.on_conflict_do_update(index_elements=["request_id", "row"], set_=keep))
    return True


async def feedback(request: Request, caller: str = "anonymous") -> Response:
    if not config().enabled:
        return _resp({"error": "the inference log is off (INFERENCE_LOG=off): outcomes cannot be joined"}, 409)
    ct = request.headers.get("content-type") or ""
    if ct.split(";")[0].strip().lower() != "application/json":
        return _resp({"error": "Content-Type must be application/json", "errors": []}, 415)
    body = await request.body()
    if len(body) > MAX_BODY:
        return _resp({"error": f"request body too large: the limit is {MAX_BODY} bytes", "errors": []}, 413)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _resp({"errors": [{"field": "body", "rule": "body must be valid JSON"}]}, 400)
    if not isinstance(doc, dict):
        return _resp({"errors": [{"field": "body", "rule": "body must be a JSON object"}]}, 400)
    try:
        outcome = Outcome.model_validate(doc)
    except ValidationError as exc:
        return _resp({"errors": _errors(exc)}, 422)
    state = request.scope.get("state") or {}
    who = getattr(state.get("principal") or state.get("caller"), "name", None) or caller
    try:
        found = await run_in_threadpool(_store, outcome, who)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("feedback not stored: database error (%s)", type(exc).__name__)
        return _resp({"error": "the outcome store is unavailable; retry later"}, 503)
    if not found:
        return _resp(
            {"errors": [{"field": "request_id", "rule": "no logged prediction with this request_id and row"}]}, 404
        )
    return _resp({"request_id": outcome.request_id, "row": outcome.row, "stored": True}, 200)
