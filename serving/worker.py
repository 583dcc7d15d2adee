"""The gunicorn worker class: uvicorn's, with uvloop + httptools and no access log (it would cost time per
request and is where request details could leak into logs)."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # uvicorn.workers is deprecated in favour of the separate uvicorn-worker package; this one is installed.
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker


class Worker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False, "server_header": False}
