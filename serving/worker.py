"""The gunicorn worker class: uvicorn's (from the ``uvicorn-worker`` package, which replaces the deprecated
``uvicorn.workers``), with uvloop + httptools and no access log (it would cost time per request and is where
request details could leak into logs)."""

from __future__ import annotations

from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False, "server_header": False}
