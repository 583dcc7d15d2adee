"""The API's routes in three routers: MLflow's scoring protocol, the friendly /predict, and operations.

Dependencies give each handler the settings and the served model (``deps``); a request that cannot be scored
raises ``InputError`` and the app's exception handler answers in the route's error shape. The request and
response models here are what the OpenAPI document is generated from.

MLflow's protocol routes (/invocations is the hot path the benchmark measures) are declared like any route but
run as ``LeanRoute``s, which call the endpoint with the request alone instead of solving dependencies per
request (benchmarks/fastapi_overhead.py: FastAPI's per-request machinery costs about as much as the whole
framework path of a plain route; README, Benchmark). They call the same dependency functions themselves.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.routing import APIRoute
from mlflow.version import VERSION
from starlette.responses import HTMLResponse, Response
from starlette.routing import request_response as starlette_request_response

from serving import auth, decode, deps, feedback, inference_log, limits, metrics, strict
from serving.deps import JSON, CurrentModel, RequestId, SettingsDep
from serving.errors import Deadline, InputError
from serving.mlflow_adapter import CONTENT_TYPE_CSV, CONTENT_TYPE_JSON, CONTENT_TYPE_PARQUET, CONTENT_TYPES
from serving.model_store import ServedModel
from serving.schemas import (
    FeedbackBulk,
    FeedbackError,
    FeedbackStored,
    Health,
    InvocationsResponse,
    Lang,
    MlflowError,
    ModelInfo,
    PredictError,
    PredictResponse,
    Unavailable,
)
from serving.settings import Settings


class LeanRoute(APIRoute):
    """A route whose endpoint takes only the Request and returns a Response: declared (and documented in
    OpenAPI) like any FastAPI route, but served as a plain Starlette route — no per-request dependency
    solving, exit stacks or response validation. Exception handlers apply as for any route."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.dependencies:  # they would be silently skipped (an authentication dependency, say)
            raise TypeError(f"{self.path}: a LeanRoute solves no dependencies; check inside the endpoint")
        self.app = starlette_request_response(self.endpoint)


def mount(app: FastAPI) -> list[str]:
    """Add the routers to the app; returns every path. MLflow's protocol routes go into the app's own route
    list: FastAPI matches an included router's routes through an extra layer per request (measured in
    benchmarks/fastapi_overhead.py), which the hot path does without."""
    app.router.routes.extend(mlflow_router.routes)
    app.include_router(api_router)
    app.include_router(ops_router)
    app.router.routes.extend(outcomes_router.routes)
    return [r.path for router in (mlflow_router, api_router, ops_router, outcomes_router) for r in router.routes]


def _errors(model: type, *statuses: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "malformed request, or (/invocations) values that break the model's rules",
        404: "no model is loaded",
        408: "the body was not received within BODY_READ_TIMEOUT_S",
        413: "body, rows, columns, a value's length or Parquet's decoded size over the limit",
        415: "unsupported Content-Type (UTF-8 only, no unknown parameters)",
        409: "the inference log is off (INFERENCE_LOG=off): there is nothing to join an outcome to",
        422: "values that break the model's rules, or a bad query parameter",
        503: "no model is loaded yet, too many uploads at once (Retry-After), or (/feedback) its database is down",
        504: "the request took longer than REQUEST_TIMEOUT_S",
    }
    return {s: {"model": model, "description": what[s]} for s in statuses}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# ---- MLflow scoring protocol ----------------------------------------------------------------------------
mlflow_router = APIRouter(tags=["MLflow scoring protocol"], route_class=LeanRoute)

INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            CONTENT_TYPE_JSON: {"schema": _ref("InvocationsRequest")},
            CONTENT_TYPE_CSV: {
                "schema": {"type": "string", "description": "CSV with a header row of feature names (UTF-8)"}
            },
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
assert set(INVOCATIONS_BODY["requestBody"]["content"]) == set(CONTENT_TYPES)  # every type MLflow serves


@mlflow_router.post(
    "/invocations",
    response_model=InvocationsResponse,
    responses=_errors(MlflowError, 400, 408, 413, 415, 503, 504),
    openapi_extra=INVOCATIONS_BODY,
    summary="Score rows (MLflow's protocol: JSON formats, CSV, Parquet)",
)
async def invocations(request: Request) -> Response:
    await auth.authorize(request, "predict")  # a LeanRoute solves no dependencies: the check is explicit here
    model = await deps.current_model(request)
    s: Settings = request.app.state.settings
    media = decode.mime(request.headers.get("content-type"), CONTENT_TYPES)
    data = await decode.body(request, s.max_body_bytes)
    dl = Deadline(s.request_timeout_s)
    bad = strict.Collector(model.prepared["rules"])
    heavy = len(data) > limits.INLINE_BYTES or media == CONTENT_TYPE_PARQUET  # Parquet: size is not its cost
    X, flags = await limits.bounded(request, dl, heavy, _decode, bad, media, data, model.prepared["limits"], dl)
    dl.check()
    bad.check(X)
    strict.check_interval(model, flags.get("interval", False))
    out = model.risk.predict_matrix(X, **flags)
    dl.check()
    metrics.count_levels(out["risk_level"])
    rid = deps.request_id(request)
    inference_log.record(request, model, "/invocations", rid, X, out, caller=_caller(request))
    payload = orjson.dumps({"predictions": strict.as_records(out)})
    return Response(payload, media_type=JSON, headers={"x-request-id": rid})


def _caller(request: Request) -> str:
    """Who scored, for the inference log: the credential's name or the app's user (never the credential)."""
    return auth.caller(request)


def _decode(
    bad: strict.Collector, media: str, data: bytes, lim: limits.Limits, dl: Deadline
) -> tuple[Any, dict[str, bool]]:
    """A body of any of MLflow's content types → (matrix, params' flags), within the request's limits."""
    if media == CONTENT_TYPE_JSON:
        return strict.json_to_matrix(bad, decode.json_body(data, lim), lim, dl)
    if media == CONTENT_TYPE_CSV:
        return strict.frame_to_matrix(bad, decode.read_csv(bad.rules, data, lim, dl), lim), {}
    df, names = decode.read_parquet(data, lim, dl, bad.rules.index)
    return strict.frame_to_matrix(bad, df, lim, names), {}


@mlflow_router.get("/ping", responses={404: {"description": "no model is loaded"}}, summary="Liveness (MLflow)")
async def ping(request: Request) -> Response:
    # MLflow's semantics: 200 with a newline when a model is loaded, 404 otherwise.
    return Response("\n", status_code=200 if request.app.state.store.current else 404, media_type=JSON)


@mlflow_router.get("/version", summary="MLflow version")
async def version(request: Request) -> Response:
    return Response(VERSION, media_type=JSON)


# ---- friendly API ---------------------------------------------------------------------------------------
api_router = APIRouter(tags=["Friendly API"])

PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            CONTENT_TYPE_JSON: {
                "schema": {"oneOf": [_ref("Patient"), {"type": "array", "items": _ref("Patient"), "minItems": 1}]}
            }
        },
    }
}


@api_router.post(
    "/predict",
    response_model=PredictResponse,
    responses=_errors(PredictError, 400, 408, 413, 415, 422, 503, 504),
    openapi_extra=PREDICT_BODY,
    summary="Score one patient or a list, with per-feature contributions and errors in Spanish or English",
    dependencies=[Depends(auth.require("predict"))],
)
async def predict(
    request: Request,
    model: CurrentModel,
    settings: SettingsDep,
    rid: RequestId,
    lang: Annotated[Lang, Query(description="language of error messages")] = "es",
    contributions: Annotated[bool, Query(description="include per-feature contributions")] = True,
    interval: Annotated[bool, Query(description="include the 90 % bootstrap interval of each probability")] = False,
) -> Response:
    decode.mime(request.headers.get("content-type"), [CONTENT_TYPE_JSON])
    data = await decode.body(request, settings.max_body_bytes)
    dl = Deadline(settings.request_timeout_s)
    bad = strict.Collector(model.prepared["rules"])
    heavy = len(data) > limits.INLINE_BYTES
    X = await limits.bounded(request, dl, heavy, _patients, bad, data, model.prepared["limits"], dl)
    bad.check(X)
    strict.check_interval(model, interval)
    out = model.risk.predict_matrix(X, contributions=contributions, interval=interval)
    dl.check()
    metrics.count_levels(out["risk_level"])
    inference_log.record(request, model, "/predict", rid, X, out, caller=_caller(request))
    doc = {
        "request_id": rid,
        "model": {"name": model.name, "version": model.version},
        "predictions": _friendly(model, out, contributions),
    }
    return Response(orjson.dumps(doc), media_type=JSON, headers={"x-request-id": rid})


def _patients(bad: strict.Collector, data: bytes, lim: limits.Limits, dl: Deadline) -> Any:
    """The body (one patient object or a non-empty list of them) → matrix, by the same rules as /invocations."""
    doc = decode.json_body(data, lim)
    rows = [doc] if type(doc) is dict else doc
    if type(rows) is not list or not rows:
        raise InputError("body must be a JSON object or a non-empty array of objects", rule="body")
    if len(rows) > lim.max_rows:
        raise InputError(f"too many patients: the limit is {lim.max_rows} per request", status=413)
    return strict.records(bad, rows, lim, dl, what="patient")


def _friendly(model: ServedModel, out: dict[str, Any], contributions: bool) -> list[dict[str, Any]]:
    rows = []
    prob, label, level = out["probability"].tolist(), out["label"].tolist(), out["risk_level"].tolist()
    if contributions:
        logit, base = out["logit"].tolist(), out["baseline"].tolist()
        contrib = {n: out[f"contrib_{n}"].tolist() for n in model.names}
    for i in range(len(prob)):
        row: dict[str, Any] = {"probability": prob[i], "label": label[i], "risk_level": level[i]}
        if "probability_low" in out:
            row["probability_low"] = float(out["probability_low"][i])
            row["probability_high"] = float(out["probability_high"][i])
        if contributions:
            row["baseline"] = base[i]
            row["logit"] = logit[i]
            row["contributions"] = {n: c[i] for n, c in contrib.items()}
        rows.append(row)
    return rows


# ---- outcomes -------------------------------------------------------------------------------------------
outcomes_router = APIRouter(tags=["Outcomes"], route_class=LeanRoute)

FEEDBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            CONTENT_TYPE_JSON: {
                "schema": {
                    "oneOf": [
                        _ref("Outcome"),
                        {"type": "array", "items": _ref("Outcome"), "minItems": 1, "description": "at most MAX_ROWS"},
                    ]
                }
            }
        },
    }
}


@outcomes_router.post(
    "/feedback",
    responses={
        200: {
            "description": "one outcome stored, or (an array) what happened to each item",
            "content": {CONTENT_TYPE_JSON: {"schema": {"oneOf": [_ref("FeedbackStored"), _ref("FeedbackBulk")]}}},
        },
        404: {"model": FeedbackError, "description": "no logged prediction with this request_id and row"},
        **_errors(FeedbackError, 400, 409, 413, 415, 422, 503),
    },
    openapi_extra=FEEDBACK_BODY,
    summary="Record the confirmed outcome of a prediction (or of many), joined to it in the inference log",
)
async def feedback_route(request: Request) -> Response:
    await auth.authorize(request, feedback.SCOPE)  # a LeanRoute solves no dependencies: the check is explicit here
    return await feedback.feedback(request)


OPENAPI_MODELS = (FeedbackStored, FeedbackBulk, feedback.Outcome)  # referenced by the raw schemas above


# ---- operations -----------------------------------------------------------------------------------------
ops_router = APIRouter(tags=["Operations"])


@ops_router.get("/health", response_model=Health, responses=_errors(Health, 503), summary="ok, degraded or down")
async def health(request: Request) -> Response:
    doc = inference_log.apply_health(request.app.state.store.health())
    return Response(orjson.dumps(doc), status_code=503 if doc["status"] == "down" else 200, media_type=JSON)


@ops_router.get(
    "/model/info",
    response_model=ModelInfo,
    responses=_errors(Unavailable, 503),
    summary="Served version",
    dependencies=[Depends(auth.require("info"))],
)
async def model_info(model: CurrentModel) -> Response:
    return Response(model.prepared["info"], media_type=JSON)


@ops_router.get(
    "/metrics",
    responses={200: {"content": {metrics.CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    response_class=Response,
    summary="Prometheus metrics of every worker",
    dependencies=[Depends(auth.require("metrics"))],
)
async def metrics_route() -> Response:
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


@ops_router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(auth.require("info"))])
async def openapi_json(request: Request) -> Response:
    model = request.app.state.store.current
    if model is None or not model.prepared:
        return Response(orjson.dumps(request.app.state.openapi_without_model()), media_type=JSON)
    return Response(model.prepared["openapi"], media_type=JSON)


@ops_router.get("/docs", include_in_schema=False, dependencies=[Depends(auth.require("info"))])
async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.docs_html)
