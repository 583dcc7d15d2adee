"""FastAPI dependencies: the settings, the served model and the request id. All are ``async`` (a plain
``def`` dependency runs in a thread pool: ~1 ms per request) and read only ``app.state``."""

from __future__ import annotations

import os
import re
import time
from typing import Annotated

from fastapi import Depends, Request

from serving.errors import unavailable
from serving.model_store import ServedModel
from serving.settings import Settings

JSON = "application/json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # a caller's own id


async def settings(request: Request) -> Settings:
    return request.app.state.settings


async def current_model(request: Request) -> ServedModel:
    """The served version, with everything prepared for it; 503 while there is none."""
    model = request.app.state.store.current
    if model is None or not model.prepared:
        raise unavailable()
    return model


def request_id(request: Request) -> str:
    """This request's id, minted here and the same for the whole request (the error handler reads it too): the
    inference log's key with the row, what /feedback names, and the response's ``x-request-id``. Never the
    caller's own ``x-request-id``: a caller that sent the same one twice would have its second request's rows
    collide with the first's in the log. The caller's id is kept beside ours in the request log
    (``client_request_id``)."""
    state = request.scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        rid = state["request_id"] = new_request_id()
    return rid


def new_request_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: the time in milliseconds, then 74 random bits. Unguessable like a
    random UUID, but rows logged one after another get neighbouring keys, so Postgres adds each to the
    rightmost pages of the ``(request_id, row)`` unique index instead of a random page of it: 12.4 against
    16.1 µs of the database's CPU per logged row on a table of about a million (benchmarks/inference_log_db_cost.py)."""
    rand = int.from_bytes(os.urandom(10))
    ms = time.time_ns() // 1_000_000 & (1 << 48) - 1
    value = ms << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return f"{value:032x}"


def client_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The caller's ``x-request-id`` (raw ASGI headers) if it is a plain token, so it can never smuggle anything
    into our logs; else None."""
    for k, v in headers:
        if k == b"x-request-id":  # ASGI servers give header names lower-cased
            given = v.decode("latin-1")
            return given if _REQUEST_ID.match(given) else None
    return None


async def _request_id(request: Request) -> str:
    return request_id(request)


SettingsDep = Annotated[Settings, Depends(settings)]
CurrentModel = Annotated[ServedModel, Depends(current_model)]
RequestId = Annotated[str, Depends(_request_id)]
