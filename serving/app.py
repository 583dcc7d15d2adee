"""The serving API: MLflow's scoring protocol (/invocations, /ping, /version) plus /health,
/model/info, /predict, /metrics and offline /docs.

/invocations reuses MLflow's scoring server for everything that defines the protocol — content types,
the JSON envelope split (``_split_data_and_params``), CSV and Parquet parsing, error codes and the
``{"predictions": [...]}`` records output — and replaces only its lenient per-column cast with the
strict check in ``serving.strict`` and pandas prediction with the model's float-matrix fast path.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server
from mlflow.version import VERSION
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from serving import metrics, strict
from serving.docs import openapi_document
from serving.model_store import ModelStore, ServedModel
from serving.schemas import LANGS, Validator, error_entry
from serving.settings import Settings

log = logging.getLogger("serving.app")

JSON = "application/json"
ROUTES = {
    "/invocations",
    "/predict",
    "/ping",
    "/version",
    "/health",
    "/model/info",
    "/metrics",
    "/docs",
    "/openapi.json",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DOCS_HTML = (Path(__file__).with_name("docs.html")).read_text(encoding="utf-8")


def _json(doc: Any, status: int = 200, request_id: str | None = None) -> Response:
    headers = {"x-request-id": request_id} if request_id else None
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON, headers=headers)


def _request_id(request: Request) -> str:
    # Accept a caller's id only if it is a plain token, so it can never smuggle anything into our logs.
    given = request.headers.get("x-request-id")
    return given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex


def _mime(content_type: str | None) -> str:
    """MLflow's content-type rules, except that a missing header is a 415 (MLflow answers 500)."""
    if not content_type:
        raise strict.InputError(
            f"Content-Type header is required; supported types: {scoring_server.CONTENT_TYPES}", status=415
        )
    parts = [p.strip() for p in content_type.split(";")]
    params = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in parts[1:] if p)}
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise strict.InputError("The scoring server only supports UTF-8", status=415)
    if set(params) - {"charset"}:
        raise strict.InputError(f"Unrecognized content type parameters: {sorted(set(params) - {'charset'})}", 415)
    mime = parts[0].lower()
    if mime not in scoring_server.CONTENT_TYPES:
        raise strict.InputError(
            f"This predictor only supports the following content types: {scoring_server.CONTENT_TYPES}", status=415
        )
    return mime


async def _body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes before reading it when the length is declared and
    while streaming when it is not (chunked), so an oversized upload never sits in memory."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise strict.InputError("Content-Length must be a whole number")
        if int(declared) > limit:
            raise strict.InputError(f"request body too large: the limit is {limit} bytes", status=413)
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise strict.InputError(f"request body too large: the limit is {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # MLflow's own client (json.dumps) writes NaN for missing values, which strict JSON parsers refuse;
    # the standard library accepts it, so only such bodies pay for the slower parser.
    try:
        return json.loads(body)
    except ValueError:
        raise strict.InputError("Invalid input. Ensure that input is valid JSON.") from None


def _error_code(status: int, problems: bool) -> str:
    if status == 413:
        return "REQUEST_LIMIT_EXCEEDED"
    if status == 504:
        return "DEADLINE_EXCEEDED"
    if status == 503:
        return "TEMPORARILY_UNAVAILABLE"
    # the same codes MLflow gives: schema/value problems vs. malformed requests
    return "INVALID_PARAMETER_VALUE" if problems else "BAD_REQUEST"


def _log_rejection(route: str, rid: str, status: int, model: ServedModel | None, err: strict.InputError) -> None:
    # Field names only when they are the model's own; never values, never unknown keys sent by the client.
    known = sorted({p["field"] for p in err.problems if model and p["field"] in model.index})
    log.info("%s %s request_id=%s fields=%s", route, status, rid, known)


class Api:
    """Route handlers over a ModelStore; per-version derived objects are rebuilt on each swap."""

    def __init__(self, settings: Settings, store: ModelStore):
        self.settings = settings
        self.store = store
        self.validators: dict[str, Validator] = {}
        self.info: dict[str, bytes] = {}
        self.openapi: dict[str, bytes] = {}
        store.on_swap(self.prepare)
        if store.current is not None:
            self.prepare(store.current)

    def prepare(self, model: ServedModel) -> None:
        """Everything a version needs, built once per swap rather than per request."""
        key = f"{model.version}:{model.source}"
        validator = Validator(model, self.settings.allow_extra_columns)
        spec = model.spec
        info = {
            "name": model.name,
            "version": model.version,
            "alias": model.alias,
            "run_id": model.run_id,
            "created_at": model.created_at,
            "source": model.source,
            **{
                k: spec.get(k)
                for k in (
                    "metrics",
                    "baselines",
                    "published_baselines",
                    "features",
                    "threshold",
                    "risk_bands",
                    "target",
                    "family",
                    "calibration",
                    "hyperparameters",
                    "data_checksum",
                    "trained_at",
                    "n_train",
                    "n_test",
                    "description",
                    "dataset",
                )
            },
            "signature": model.signature,
        }
        self.validators = {model.version: validator}
        self.info = {key: orjson.dumps(info)}
        self.openapi = {model.version: orjson.dumps(openapi_document(model, validator, self.settings))}
        metrics.MODEL_VERSION.labels(model.name).set(float(model.version) if model.version.isdigit() else -1)

    # ---- MLflow protocol -----------------------------------------------------------------------------
    async def ping(self, request: Request) -> Response:
        # MLflow's semantics: 200 with a newline when a model is loaded, 404 otherwise.
        return Response("\n", status_code=200 if self.store.current else 404, media_type=JSON)

    async def version(self, request: Request) -> Response:
        return Response(VERSION, media_type=JSON)

    async def invocations(self, request: Request) -> Response:
        rid = _request_id(request)
        model = self.store.current
        try:
            if model is None:
                raise strict.InputError("no model is loaded yet", status=503)
            s = self.settings
            mime = _mime(request.headers.get("content-type"))
            body = await _body(request, s.max_body_bytes)
            dl = strict.Deadline(s.request_timeout_s)
            if mime == scoring_server.CONTENT_TYPE_JSON:
                doc = _loads(body)
                X, contributions = strict.json_to_matrix(model, doc, s.allow_extra_columns, s.max_rows, dl)
            else:
                X, contributions = self._frame(model, mime, body), False
            dl.check()
            strict.validate(model, X)
            out = model.risk.predict_matrix(X, contributions=contributions)
            dl.check()
            payload = orjson.dumps({"predictions": strict.records(out)})
        except strict.InputError as err:
            _log_rejection("/invocations", rid, err.status, model, err)
            doc = {"error_code": _error_code(err.status, bool(err.problems)), "message": err.message}
            return _json(doc, err.status, rid)
        metrics.count_levels(out["risk_level"])
        return Response(payload, media_type=JSON, headers={"x-request-id": rid})

    def _frame(self, model: ServedModel, mime: str, body: bytes) -> Any:
        s = self.settings
        try:
            if mime == scoring_server.CONTENT_TYPE_CSV:
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    raise strict.InputError("Invalid input. Ensure that input is valid UTF-8.") from None
                # MLflow's CSV parser without a schema: no dtype coercion, so text stays text and is refused.
                df = scoring_server.parse_csv_input(StringIO(text), schema=None)
            else:
                df = scoring_server.parse_parquet_input(BytesIO(body))
        except MlflowException:
            # MLflow's message carries pandas' error text and a stack trace, which can quote the input.
            kind = "CSV" if mime == scoring_server.CONTENT_TYPE_CSV else "Parquet"
            raise strict.InputError(f"Invalid input. The body could not be parsed as {kind} with a header.") from None
        return strict.frame_to_matrix(model, df, s.allow_extra_columns, s.max_rows)

    # ---- friendly API --------------------------------------------------------------------------------
    async def predict(self, request: Request) -> Response:
        rid = _request_id(request)
        model = self.store.current
        lang = request.query_params.get("lang", "es")
        errors: list[dict[str, Any]] = []
        if lang not in LANGS:
            errors.append(error_entry(None, "lang", "lang", "en"))
            lang = "en"
        raw = request.query_params.get("contributions", "true").lower()
        if raw not in ("true", "false", "1", "0"):
            errors.append(error_entry(None, "contributions", "bool", lang))
        if errors:
            return _json({"request_id": rid, "errors": errors}, 422, rid)
        contributions = raw in ("true", "1")
        try:
            if model is None:
                raise strict.InputError("no model is loaded yet", status=503)
            ct = request.headers.get("content-type")
            if not ct or ct.split(";")[0].strip().lower() != JSON:
                raise strict.InputError("Content-Type must be application/json", status=415)
            body = await _body(request, self.settings.max_body_bytes)
        except strict.InputError as err:
            _log_rejection("/predict", rid, err.status, model, err)
            return _json({"request_id": rid, "error": err.message, "errors": []}, err.status, rid)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _json({"request_id": rid, "errors": [error_entry(None, "body", "json", lang)]}, 400, rid)
        rows = [doc] if type(doc) is dict else doc
        if type(rows) is not list or not rows:
            return _json({"request_id": rid, "errors": [error_entry(None, "body", "body", lang)]}, 400, rid)
        if len(rows) > self.settings.max_rows:
            msg = f"too many patients: the limit is {self.settings.max_rows} per request"
            return _json({"request_id": rid, "error": msg, "errors": []}, 413, rid)
        validator = self.validators.get(model.version) or Validator(model, self.settings.allow_extra_columns)
        patients, errors = validator.validate(rows, lang)
        if errors:
            known = sorted({e["field"] for e in errors if e["field"] in model.index})
            log.info("/predict 422 request_id=%s fields=%s", rid, known)
            return _json({"request_id": rid, "errors": errors}, 422, rid)
        X = _patients_matrix(model, patients)
        problems = model.risk.validate_matrix(X)  # the model's own rules, in case the spec and model disagree
        if problems:
            errs = [error_entry(None, p["field"], "invalid", lang) | {"rule": p["rule"]} for p in problems]
            return _json({"request_id": rid, "errors": errs}, 422, rid)
        out = model.risk.predict_matrix(X, contributions=contributions)
        metrics.count_levels(out["risk_level"])
        return _json(
            {
                "request_id": rid,
                "model": {"name": model.name, "version": model.version},
                "predictions": _friendly(model, out, contributions),
            },
            request_id=rid,
        )

    # ---- operations ----------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        doc = self.store.health()
        return _json(doc, 503 if doc["status"] == "down" else 200)

    async def model_info(self, request: Request) -> Response:
        model = self.store.current
        if model is None:
            return _json({"error": "no model is loaded yet"}, 503)
        key = f"{model.version}:{model.source}"
        if key not in self.info:
            self.prepare(model)
        return Response(self.info[key], media_type=JSON)

    async def metrics(self, request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    async def openapi_json(self, request: Request) -> Response:
        model = self.store.current
        if model is None:
            return _json(openapi_document(None, None, self.settings))
        if model.version not in self.openapi:
            self.prepare(model)
        return Response(self.openapi[model.version], media_type=JSON)

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)


def _patients_matrix(model: ServedModel, patients: list[Any]) -> Any:
    import numpy as np

    X = np.full((len(patients), len(model.names)), np.nan)
    for i, p in enumerate(patients):
        for j, name in enumerate(model.names):
            v = getattr(p, name)
            if v is None:
                continue
            X[i, j] = model.categories[j][v] if j in model.categories else v
    return X


def _friendly(model: ServedModel, out: dict[str, Any], contributions: bool) -> list[dict[str, Any]]:
    rows = []
    prob, label, level = out["probability"].tolist(), out["label"].tolist(), out["risk_level"].tolist()
    if contributions:
        logit, base = out["logit"].tolist(), out["baseline"].tolist()
        contrib = {n: out[f"contrib_{n}"].tolist() for n in model.names}
    for i in range(len(prob)):
        row: dict[str, Any] = {"probability": prob[i], "label": label[i], "risk_level": level[i]}
        if contributions:
            row["baseline"] = base[i]
            row["logit"] = logit[i]
            row["contributions"] = {n: c[i] for n, c in contrib.items()}
        rows.append(row)
    return rows


def create_app(settings: Settings, store: ModelStore) -> Any:
    """The ASGI app. FastAPI gives the app object; routes are plain Starlette routes (no dependency
    solving per request) and the OpenAPI document is built from the served model's spec."""
    api = Api(settings, store)
    app = FastAPI(title="Type-2 diabetes risk API", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_route("/ping", api.ping, methods=["GET"])
    app.add_route("/version", api.version, methods=["GET"])
    app.add_route("/invocations", api.invocations, methods=["POST"])
    app.add_route("/predict", api.predict, methods=["POST"])
    app.add_route("/health", api.health, methods=["GET"])
    app.add_route("/model/info", api.model_info, methods=["GET"])
    app.add_route("/metrics", api.metrics, methods=["GET"])
    app.add_route("/openapi.json", api.openapi_json, methods=["GET"])
    app.add_route("/docs", api.docs, methods=["GET"])
    app.add_middleware(metrics.MetricsMiddleware, routes=ROUTES)
    app.state.api = api
    return app
