"""The gunicorn worker class: uvicorn's (from the ``uvicorn-worker`` package, which replaces the deprecated
``uvicorn.workers``), with uvloop + httptools and no access log (it would cost time per request and is where
request details could leak into logs), and the connection bounds uvicorn lacks.

What uvicorn-worker 0.4 passes to uvicorn: gunicorn's ``keepalive`` (idle time between requests), ``backlog``,
``max_requests`` and the heartbeat; not ``worker_connections``. And uvicorn 0.54 with httptools has no timer before
a connection's first request (a socket that sends nothing stays open for ever), no bound on the request head
(100 MB of headers grew a worker by 115 MiB), no body read timeout, and ``limit_concurrency`` answers 503 only
once a request head has arrived. ``Protocol`` adds:

- a connection that sends nothing is closed after KEEPALIVE_TIMEOUT_S, as an idle one between requests is;
- beyond MAX_CONNECTIONS open connections in this worker, a new one is answered 503 and closed at once;
- a request head must arrive within BODY_READ_TIMEOUT_S of its first byte and be at most MAX_HEAD_BYTES, else
  408 / 431 and closed;
- a body that is still arriving BODY_READ_TIMEOUT_S + GRACE_S after its head is cut off. The app answers 408
  before that when it reads the body (``serving.limits.BodyGuard``); this catches a body the app never reads,
  e.g. after an early 413 or 415, which uvicorn would otherwise keep receiving on a kept-alive connection.

Each cut is counted in /metrics (``serving_connections_cut_total{reason}``); none is logged per event (an attack
would flood the log), at most one line per reason a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

log = logging.getLogger("serving.connections")

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; nginx allows 32 KB, gunicorn about 800 KB
GRACE_S = 1.0
LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class ConnectionLimits:
    read_timeout_s: float = 10.0
    keepalive_s: float = 5.0
    max_connections: int = 100


_CODES = {408: "DEADLINE_EXCEEDED", 431: "REQUEST_LIMIT_EXCEEDED", 503: "TEMPORARILY_UNAVAILABLE"}


def _response(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP response in MLflow's error shape, closing the connection (written by the protocol: the
    request never reached the app)."""
    body = orjson.dumps({"error_code": _CODES[status], "message": message})
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"connection: close\r\n\r\n" + body


_last_logged: dict[str, float] = {}


def _cut(reason: str) -> None:
    from serving import metrics  # after PROMETHEUS_MULTIPROC_DIR is set (serving.__main__)

    metrics.CONNECTIONS_CUT.labels(reason).inc()
    now = time.monotonic()
    if now - _last_logged.get(reason, -LOG_EVERY_S) >= LOG_EVERY_S:
        _last_logged[reason] = now
        log.warning("connection cut: %s (counted in serving_connections_cut_total; logged once a minute)", reason)


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds above (values from ``protocol_class``).

    Deadlines are kept as numbers and checked by one sweep of the worker's connections every SWEEP_S, not by a
    timer per request: a timer costs about 5 µs to arm and cancel under uvloop, and a request would need two."""

    limits = ConnectionLimits()
    SWEEP_S = 0.25

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._in_head = False
        # uvicorn arms its keep-alive timer only after a response: a connection that never sends is idle too.
        self._deadline: float | None = self.loop.time() + self.timeout_keep_alive
        if not getattr(self.server_state, "serving_sweep", False):  # one sweep per server (worker)
            self.server_state.serving_sweep = True  # type: ignore[attr-defined]
            self.loop.call_later(self.SWEEP_S, _sweep, self.loop, self.server_state.connections, self.SWEEP_S)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "Service Unavailable", "too many connections; retry shortly", "too_many_connections")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing, while the head is still incomplete (bytes of a body in the same read are not
        # counted, except those of a previous pipelined request: an over-count of one read at most).
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, "Request Header Fields Too Large", "request head too large", "head_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        self._deadline = self.loop.time() + self.limits.read_timeout_s

    def on_headers_complete(self) -> None:
        self._in_head = False
        # the body's backstop: the app answers 408 before it when it reads the body (serving.limits.BodyGuard)
        self._deadline = self.loop.time() + self.limits.read_timeout_s + GRACE_S
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._deadline = None  # received whole; between requests uvicorn's keep-alive timer takes over
        super().on_message_complete()

    def _past_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None and not self._in_head:  # never sent a byte
            self.transport.close()
        elif self._in_head:
            self._refuse(408, "Request Timeout", "request head not received in time", "head_timeout")
        else:  # the app has answered, or never read the body: nothing more is waited for
            _cut("body_timeout")
            self.transport.close()

    def _refuse(self, status: int, reason: str, message: str, why: str) -> None:
        _cut(why)
        self._deadline = None
        cycle = self.cycle  # the previous request's on a kept-alive connection, until this head is complete
        if cycle is None or not cycle.response_started or cycle.response_complete:
            self.transport.write(_response(status, reason, message))
        self.transport.close()


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any], every_s: float) -> None:
    now = loop.time()
    for conn in list(connections):
        deadline = getattr(conn, "_deadline", None)
        if deadline is not None and now >= deadline:
            conn._past_deadline()
    loop.call_later(every_s, _sweep, loop, connections, every_s)


def protocol_class(limits: ConnectionLimits) -> type[Protocol]:
    return type("Protocol", (Protocol,), {"limits": limits})


class Worker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False, "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # ``self.app`` is the gunicorn application (serving.__main__), which carries the settings' limits.
        limits = getattr(self.app, "connection_limits", None) or ConnectionLimits()
        self.config.http = protocol_class(limits)
        self.config.timeout_keep_alive = limits.keepalive_s
