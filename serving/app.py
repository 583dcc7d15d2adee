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

from serving import feedback, inference_log, metrics, strict
from serving.docs import openapi_document
from serving.model_store import ModelStore, ServedModel
from serving.request_log import RequestLogMiddleware
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
    "/feedback",
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


def _parse_int(text: str) -> int | float:
    # Integers too long for a float's exact range are out of any feature's range anyway: as a float (inf when
    # beyond 1e308) they reach the range check instead of overflowing float() or Python's int-digit limit.
    return int(text) if len(text) <= 18 else float(text)


def _loads(body: bytes) -> Any:
    """JSON → Python. Raises InputError (400) for anything that is not JSON, including nesting too deep
    for the parser, never a 500."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # MLflow's own client (json.dumps) writes NaN for missing values, which strict JSON parsers refuse; and
    # orjson refuses numbers beyond a double (1e400) or 64-bit integers, which are range errors, not syntax.
    # The standard library accepts them, so only such bodies pay for the slower parser.
    try:
        return json.loads(body, parse_int=_parse_int)
    except (ValueError, RecursionError):
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
        store.on_swap(self.prepare)  # runs before a version becomes current; an exception keeps the old one
        if store.current is not None and not store.current.prepared:
            try:
                self.prepare(store.current)
            except Exception as exc:  # noqa: BLE001 - a model we cannot describe is not served
                log.error("version %s cannot be served (%s)", store.current.version, type(exc).__name__)
                store.problem = f"version {store.current.version} could not be prepared ({type(exc).__name__})"
                store.current = None

    @staticmethod
    def _ready(model: ServedModel) -> dict[str, Any]:
        if not model.prepared:  # pragma: no cover - every swap prepares; a store used without this app does not
            raise strict.InputError("the model is being prepared; retry", status=503)
        return model.prepared

    def prepare(self, model: ServedModel) -> None:
        """Everything a version needs, built once per version before it is swapped in (stored on the model,
        so a request that took a reference to a model also has its validator, info and OpenAPI document)."""
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
        prepared = {
            "validator": validator,
            "info": orjson.dumps(info),
            "openapi": orjson.dumps(openapi_document(model, validator, self.settings)),
        }
        model.prepared.clear()
        model.prepared.update(prepared)
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
        inference_log.record(request, model, "/invocations", rid, X, out)
        return Response(payload, media_type=JSON, headers={"x-request-id": rid})

    def _frame(self, model: ServedModel, mime: str, body: bytes) -> Any:
        s = self.settings
        if mime == scoring_server.CONTENT_TYPE_CSV:
            df = _read_csv(model, body, s.max_rows)
        else:
            df = _read_parquet(body, s.max_rows, s.max_body_bytes)
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
        dl = strict.Deadline(self.settings.request_timeout_s)
        try:
            doc = _loads(body)
        except strict.InputError:
            return _json({"request_id": rid, "errors": [error_entry(None, "body", "json", lang)]}, 400, rid)
        rows = [doc] if type(doc) is dict else doc
        if type(rows) is not list or not rows:
            return _json({"request_id": rid, "errors": [error_entry(None, "body", "body", lang)]}, 400, rid)
        if len(rows) > self.settings.max_rows:
            msg = f"too many patients: the limit is {self.settings.max_rows} per request"
            return _json({"request_id": rid, "error": msg, "errors": []}, 413, rid)
        try:
            validator = self._ready(model)["validator"]
            patients, errors = validator.validate(rows, lang, dl)
            if errors:
                known = sorted({e["field"] for e in errors if e["field"] in model.index})
                log.info("/predict 422 request_id=%s fields=%s", rid, known)
                return _json({"request_id": rid, "errors": errors}, 422, rid)
            dl.check()
            X = _patients_matrix(model, patients)
            problems = strict.problems(model, X)  # the model's own rules, in case the spec and model disagree
            if problems:
                errs = [error_entry(None, p["field"], "invalid", lang) | {"rule": p["rule"]} for p in problems]
                return _json({"request_id": rid, "errors": errs}, 422, rid)
            out = model.risk.predict_matrix(X, contributions=contributions)
            dl.check()
        except strict.InputError as err:
            _log_rejection("/predict", rid, err.status, model, err)
            return _json({"request_id": rid, "error": err.message, "errors": []}, err.status, rid)
        metrics.count_levels(out["risk_level"])
        inference_log.record(request, model, "/predict", rid, X, out)
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
        doc = inference_log.apply_health(self.store.health())
        return _json(doc, 503 if doc["status"] == "down" else 200)

    async def model_info(self, request: Request) -> Response:
        model = self.store.current
        if model is None or not model.prepared:
            return _json({"error": "no model is loaded yet"}, 503)
        return Response(model.prepared["info"], media_type=JSON)

    async def metrics(self, request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    async def openapi_json(self, request: Request) -> Response:
        model = self.store.current
        if model is None or not model.prepared:
            return _json(openapi_document(None, None, self.settings))
        return Response(model.prepared["openapi"], media_type=JSON)

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)


PARQUET_EXPANSION = 20  # decoded Parquet may be at most this many times MAX_BODY_BYTES


def _read_csv(model: ServedModel, body: bytes, max_rows: int) -> Any:
    """CSV with a header → DataFrame, as MLflow parses it (pandas, no dtype coercion), with two checks first:
    every row has exactly the header's number of fields (pandas would silently make an extra first field the
    index, shifting every value one column), and the row count is within MAX_ROWS (before pandas builds
    anything). Messages name row numbers and counts only, never a value."""
    import csv

    import pandas as pd

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise strict.InputError("Invalid input. Ensure that input is valid UTF-8.") from None
    try:
        reader = csv.reader(StringIO(text))
        width, rows = None, 0
        for fields in reader:
            if not fields:  # a blank line, which pandas skips too
                continue
            if width is None:
                width = len(fields)
                continue
            rows += 1
            if rows > max_rows:
                raise strict.InputError(f"too many rows: the limit is {max_rows} per request", status=413)
            if len(fields) != width:
                raise strict.InputError(
                    f"Invalid input. CSV row {rows} has {len(fields)} fields but the header has {width}; "
                    "every row needs one value per header column."
                )
    except csv.Error:
        raise strict.InputError("Invalid input. The body could not be parsed as CSV with a header.") from None
    if width is None:
        raise strict.InputError("Invalid input. The body could not be parsed as CSV with a header.")
    # Categorical columns stay text ("1" is not a number there); all others as MLflow parses them.
    dtype = {n: str for j, n in enumerate(model.names) if j in model.categories}
    try:
        return pd.read_csv(StringIO(text), index_col=False, dtype=dtype or None)
    except Exception:  # noqa: BLE001 - pandas' message can quote the input: never passed on
        raise strict.InputError("Invalid input. The body could not be parsed as CSV with a header.") from None


def _read_parquet(body: bytes, max_rows: int, max_body_bytes: int) -> Any:
    """Parquet → DataFrame, checking the row count and decoded size from the file's metadata first: a few
    hundred KB of compressed Parquet can decode to millions of rows and gigabytes."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(BytesIO(body)).metadata
    except Exception:  # noqa: BLE001 - not Parquet (or a damaged footer)
        raise strict.InputError("Invalid input. The body could not be parsed as Parquet.") from None
    if meta.num_rows > max_rows:
        raise strict.InputError(f"too many rows: the limit is {max_rows} per request", status=413)
    decoded = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        columns = sum(group.column(c).total_uncompressed_size for c in range(group.num_columns))
        decoded += max(group.total_byte_size, columns)
    if decoded > PARQUET_EXPANSION * max_body_bytes:
        raise strict.InputError(
            f"Parquet data too large when decoded: the limit is {PARQUET_EXPANSION * max_body_bytes} bytes",
            status=413,
        )
    try:
        df = scoring_server.parse_parquet_input(BytesIO(body))
    except MlflowException:
        # MLflow's message carries the parser's error text, which can quote the input.
        raise strict.InputError("Invalid input. The body could not be parsed as Parquet.") from None
    if len(df) > max_rows:  # metadata that under-reports rows
        raise strict.InputError(f"too many rows: the limit is {max_rows} per request", status=413)
    return df


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
    app.add_route("/feedback", feedback.feedback, methods=["POST"])
    app.add_middleware(RequestLogMiddleware, routes=ROUTES, store=store)
    app.add_middleware(metrics.MetricsMiddleware, routes=ROUTES)
    inference_log.setup()
    app.state.api = api
    return app
