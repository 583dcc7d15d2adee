"""The request counter is updated before a response's last byte is sent, so a client that scrapes /metrics
right after its answer (possibly on another worker) sees its own request counted."""

from __future__ import annotations

import asyncio

from serving.metrics import REQUESTS, MetricsMiddleware


def _count(route: str, status: str) -> float:
    return REQUESTS.labels(route, "POST", status)._value.get()


async def _ok_app(scope: dict, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    await send({"type": "http.response.body", "body": b"}"})


async def _broken_app(scope: dict, receive, send) -> None:
    raise RuntimeError("boom")


def _run(app, path: str) -> list[tuple[dict, float]]:
    """The messages the middleware sent, each with the counter's value at the moment it was sent."""
    seen: list[tuple[dict, float]] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        seen.append((message, _count(path, str(seen[0][0]["status"]) if seen else "200")))

    scope = {"type": "http", "path": path, "method": "POST", "headers": []}
    asyncio.run(MetricsMiddleware(app, {path})(scope, receive, send))
    return seen


def test_counted_before_the_last_byte_is_sent() -> None:
    before = _count("/invocations", "200")
    seen = _run(_ok_app, "/invocations")
    (start, c0), (part, c1), (last, c2) = seen
    assert start["status"] == 200 and part["more_body"] and "more_body" not in last
    assert (c0, c1) == (before, before)  # not while the body is still streaming
    assert c2 == before + 1  # already counted when the last part goes out
    assert _count("/invocations", "200") == before + 1  # and only once


def test_an_unhandled_error_is_counted_once_as_500() -> None:
    before = _count("/predict", "500")
    seen = _run(_broken_app, "/predict")
    assert seen[0][0]["status"] == 500
    assert _count("/predict", "500") == before + 1
