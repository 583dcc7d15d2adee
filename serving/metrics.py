"""Prometheus metrics. With several gunicorn workers each process writes its own files under
PROMETHEUS_MULTIPROC_DIR (set by ``python -m serving`` before prometheus_client is imported) and
/metrics aggregates them, so a scrape sees the whole service, not one random worker."""

from __future__ import annotations

import logging
import os
import time
import traceback
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

log = logging.getLogger("serving.app")

REQUESTS = Counter("serving_requests_total", "HTTP requests by route, method and status", ["route", "method", "status"])
LATENCY = Histogram(
    "serving_request_duration_seconds",
    "Request latency by route and status",
    ["route", "status"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PREDICTIONS = Counter("serving_predictions_total", "Scored rows by risk level", ["risk_level"])
CONNECTIONS_CUT = Counter(
    "serving_connections_cut",
    "Connections closed by the server's limits before a request reached the app, by reason",
    ["reason"],
)
MODEL_VERSION = Gauge("serving_model_version", "Loaded model version per worker", ["name"], multiprocess_mode="liveall")

CONTENT_TYPE = CONTENT_TYPE_LATEST


def set_model_version(name: str, version: str) -> None:
    """Only in processes that serve: with several workers each reports its own version ("liveall")."""
    MODEL_VERSION.labels(name).set(float(version) if version.isdigit() else -1)


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def count_levels(levels: Any) -> None:
    if len(levels) == 1:
        PREDICTIONS.labels(str(levels[0])).inc()
        return
    import numpy as np

    names, counts = np.unique(levels.astype(str), return_counts=True)
    for name, n in zip(names.tolist(), counts.tolist(), strict=True):
        PREDICTIONS.labels(name).inc(n)


class MetricsMiddleware:
    """Pure ASGI (no per-request task or body copy, unlike BaseHTTPMiddleware): counts and times every
    request, and turns any unexpected exception into a JSON 500 without a traceback or message in the
    body, logging only the exception type and where it happened (messages can contain input values)."""

    def __init__(self, app: Any, routes: set[str]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 500, "started": False, "counted": False}

        def count() -> None:
            state["counted"] = True
            path = scope.get("path", "")
            route = path if path in self.routes else "other"
            status = str(state["status"])
            REQUESTS.labels(route, scope.get("method", ""), status).inc()
            LATENCY.labels(route, status).observe(time.perf_counter() - start)

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Counted before the last byte leaves: a client that scrapes /metrics right after its answer
                # (possibly from the other worker) sees its own request.
                count()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback to the client
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            log.error(
                "unhandled %s in %s at %s:%s",
                type(exc).__name__,
                scope.get("path"),
                where.filename if where else "?",
                where.lineno if where else "?",
            )
            if not state["started"]:
                body = orjson.dumps({"error_code": "INTERNAL_ERROR", "message": "internal error"})
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            if not state["counted"]:  # no complete answer: an error, or the client left
                count()
