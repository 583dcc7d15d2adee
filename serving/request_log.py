"""Structured access log: one JSON line per request on the ``serving.requests`` logger.

Fields: request id (ours, unique), the caller's own ``x-request-id`` when it sent a plain token
(``client_request_id``, else null), route, method, status, latency (ms), model version, caller name. Never a
body, a query string or a feature value: those live only in the access-controlled ``inference_log`` table. The caller is
what the authentication layer put in ``scope["state"]["caller"]`` (a key's name or ``app:<user>``, never the
key; serving.auth.caller_name).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from serving.deps import client_request_id

log = logging.getLogger("serving.requests")
# The line is the JSON document alone (no timestamp/level prefix), so log collectors can parse it as is.
_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter("%(message)s"))
log.addHandler(_handler)
log.propagate = False
log.setLevel(logging.INFO)


class RequestLogMiddleware:
    """Pure ASGI, like MetricsMiddleware. Also stamps ``scope["state"]["t0"]`` so the inference log can
    record each prediction's latency from the moment the request arrived."""

    def __init__(self, app: Any, routes: set[str], store: Any):
        self.app = app
        self.routes = routes
        self.store = store

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._on_shutdown(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        state = scope.setdefault("state", {})
        state["t0"] = t0
        seen: dict[str, Any] = {"status": 500, "request_id": None}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for k, v in message.get("headers") or ():
                    if k.lower() == b"x-request-id":
                        seen["request_id"] = v.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            model = getattr(self.store, "current", None)
            caller = state.get("caller") or getattr(state.get("principal"), "name", None)
            log.info(
                orjson.dumps(
                    {
                        "request_id": seen["request_id"],
                        "client_request_id": client_request_id(scope.get("headers") or ()),
                        "route": path if path in self.routes else "other",
                        "method": scope.get("method"),
                        "status": seen["status"],
                        "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
                        "model_version": model.version if model is not None else None,
                        "caller": caller or "anonymous",
                    }
                ).decode()
            )

    @staticmethod
    def _on_shutdown(send: Any) -> Any:
        """Flush the inference log when the server shuts down gracefully: uvicorn ends a worker by re-raising
        SIGTERM after the lifespan shutdown, so atexit handlers never run."""

        async def wrapper(message: dict[str, Any]) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                from starlette.concurrency import run_in_threadpool

                from serving import inference_log

                await run_in_threadpool(inference_log.shutdown)
            await send(message)

        return wrapper
