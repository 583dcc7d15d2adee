"""The serving API as a FastAPI app: MLflow's scoring protocol (/invocations, /ping, /version) plus /health,
/model/info, /predict, /metrics and offline /docs.

/invocations keeps MLflow's protocol — content types, the JSON envelope split (MLflow's
``_split_data_and_params``), Parquet read with pandas as MLflow's server reads it (the model's columns only),
error codes and the ``{"predictions": [...]}`` records output — and replaces MLflow's lenient per-column cast with
the spec's strict rules (``common.validation``) and pandas prediction with the model's float-matrix fast path. CSV
is read by our own code (``serving.decode``: pandas after a row-width check), not by MLflow. /predict decodes and
checks input with the same functions. Every body is checked against the abuse limits before it is parsed
(``serving.decode``, ``serving.limits``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from common.validation import FeatureRules
from serving import auth, inference_log, metrics, openapi, security_headers
from serving.deps import JSON, request_id
from serving.errors import InputError, error_doc
from serving.limits import BUFFERED_BODIES, BodyGuard, Limits
from serving.model_store import ModelStore, ServedModel
from serving.request_log import RequestLogMiddleware
from serving.routes import mount
from serving.schemas import LANGS, entry, problem_entries
from serving.settings import Settings

log = logging.getLogger("serving.app")

DOCS_HTML = (Path(__file__).with_name("docs.html")).read_text(encoding="utf-8")
INFO_KEYS = (
    "metrics baselines published_baselines features threshold risk_bands target family calibration "
    "hyperparameters data_checksum trained_at n_train n_test description dataset"
).split()
CLIENT_CLOSED = 499
FRIENDLY = {"/predict"}  # routes answering errors as {"request_id", "error", "errors"}; others as MLflow does


def prepare(app: FastAPI, model: ServedModel) -> None:
    """Everything a version needs, built once before it is swapped in (stored on the model, so a request that
    took a reference to a model also has its rules, info and OpenAPI document)."""
    settings: Settings = app.state.settings
    info = {
        "name": model.name,
        "version": model.version,
        "alias": model.alias,
        "run_id": model.run_id,
        "created_at": model.created_at,
        "source": model.source,
        **{k: model.spec.get(k) for k in INFO_KEYS},
        "signature": model.signature,
    }
    rules = FeatureRules(model.spec["features"])
    prepared = {
        "rules": rules,
        "limits": Limits.for_model(settings, rules),
        "info": orjson.dumps(info),
        "openapi": orjson.dumps(openapi.document(app, model, settings)),
    }
    model.prepared.clear()
    model.prepared.update(prepared)
    if app.state.worker_started:  # the gauge belongs to the processes that serve (see lifespan)
        metrics.set_model_version(model.name, model.version)


def _log_rejection(request: Request, err: InputError, status: int) -> None:
    # Field names only (the model's own); never values, never unknown keys sent by the client.
    fields = sorted({p.field for p in err.problems if p.field})
    log.info("%s %s request_id=%s fields=%s", request.url.path, status, request_id(request), fields)


def _lang(request: Request) -> str:
    lang = request.query_params.get("lang", "es")
    return lang if lang in LANGS else "en"


async def input_error(request: Request, err: InputError) -> Response:
    """The one place an InputError becomes a response: MLflow's shape and error code, or /predict's."""
    rid = request_id(request)
    path = request.url.path
    status = err.status
    if path not in FRIENDLY:
        doc: dict[str, Any] = error_doc(err) if path != "/model/info" else {"error": err.message}
    elif err.problems:  # values that break the model's rules
        doc, status = {"request_id": rid, "errors": problem_entries(err.problems, _lang(request))}, 422
    elif err.rule:  # a malformed body, or one over a limit
        doc = {"request_id": rid, "errors": [entry(err.row, "body", err.rule, _lang(request), **err.params)]}
    else:
        doc = {"request_id": rid, "error": err.message, "errors": []}
    _log_rejection(request, err, status)
    headers = {"x-request-id": rid, **err.headers}
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON, headers=headers)


async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
    """A client that went away mid-upload is not a server error: no traceback, and counted apart from 5xx in
    /metrics and the request log, as 499 ("client closed request", nginx's code). Nobody receives the response."""
    log.debug(
        "%s: client disconnected before its request was read (request_id=%s)", request.url.path, request_id(request)
    )
    return Response(status_code=CLIENT_CLOSED)


async def bad_query(request: Request, exc: RequestValidationError) -> Response:
    """/predict's query parameters (the only parameters FastAPI validates here), in /predict's shape."""
    lang = _lang(request)
    errors = []
    for e in exc.errors():
        field = str(e["loc"][-1]) if e.get("loc") else "query"
        errors.append(entry(None, field, "lang" if field == "lang" else "bool", lang))
    rid = request_id(request)
    doc = {"request_id": rid, "errors": errors}
    return Response(orjson.dumps(doc), status_code=422, media_type=JSON, headers={"x-request-id": rid})


def create_app(settings: Settings, store: ModelStore, env: dict[str, str] | None = None) -> FastAPI:
    """The ASGI app over a ModelStore. The store's versions are prepared by ``prepare`` before they are served;
    a version that cannot be prepared is not served. /ping, /version and /health are open (health checks);
    every other route needs a credential with its scope (serving.auth). ``env`` (default os.environ) holds the
    authentication and browser settings."""
    env = dict(os.environ if env is None else env)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Runs in each process that serves requests (each gunicorn worker after the fork, or a test client),
        # never in the gunicorn master: the master's threads and its metrics would be stale in the workers.
        store.after_fork()
        store.start_watcher()
        app.state.worker_started = True
        if store.current is not None:
            metrics.set_model_version(store.current.name, store.current.version)
        yield
        store.stop_watcher()
        inference_log.shutdown()  # a graceful stop flushes this worker's batch

    app = FastAPI(
        title="Type-2 diabetes risk API",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served per version from serving.openapi (see ops_router)
        lifespan=lifespan,
        # FastAPI's native telemetry checks for OpenTelemetry providers on every request: off (we export
        # Prometheus metrics ourselves).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.store = store
    app.state.worker_started = False
    app.state.docs_html = DOCS_HTML
    paths = mount(app)
    app.state.openapi_without_model = lambda: openapi.document(app, None, settings)
    app.add_exception_handler(InputError, input_error)
    app.add_exception_handler(RequestValidationError, bad_query)
    app.add_exception_handler(ClientDisconnect, client_gone)
    buffer_bytes = BUFFERED_BODIES * settings.max_body_bytes
    app.add_middleware(BodyGuard, read_timeout_s=settings.body_read_timeout_s, buffer_bytes=buffer_bytes)
    app.add_middleware(RequestLogMiddleware, routes=set(paths), store=store)
    app.add_middleware(metrics.MetricsMiddleware, routes=set(paths))
    inference_log.setup()  # in the gunicorn master: tables created or migrated once, before workers fork
    auth.install(app, settings.host, env)
    security_headers.install(app, env)

    store.on_swap(lambda model: prepare(app, model))  # runs before a version becomes current
    if store.current is not None and not store.current.prepared:
        try:
            prepare(app, store.current)
        except Exception as exc:  # noqa: BLE001 - a model we cannot describe is not served
            log.error("version %s cannot be served (%s)", store.current.version, type(exc).__name__)
            store.problem = f"version {store.current.version} could not be prepared ({type(exc).__name__})"
            store.current = None
    return app
