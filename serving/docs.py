"""The OpenAPI document, built from the served model's feature spec (so /docs shows the real schema)."""

from __future__ import annotations

from typing import Any

from mlflow.version import VERSION

from serving.settings import Settings

OK = {"200": {"description": "OK"}}
ERROR_INVOCATIONS = {
    "type": "object",
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
    "description": "MLflow's error shape; the message names field and rule, never a submitted value.",
}
ERRORS_PREDICT = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "row": {"type": ["integer", "null"]},
                    "field": {"type": "string"},
                    "rule": {"type": "string"},
                    "message": {"type": "string", "description": "in the language chosen with ?lang"},
                },
            },
        },
    },
}


def _json_content(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schema": schema}
    if example is not None:
        body["example"] = example
    return {"application/json": body}


def _example(model: Any) -> dict[str, float]:
    out = {}
    for f in model.spec["features"]:
        if f["type"] == "categorical":
            out[f["name"]] = f["categories"][0]
        elif f.get("min") is not None and f.get("max") is not None:
            mid = (f["min"] + f["max"]) / 2
            out[f["name"]] = round(mid) if f.get("integer") else round(mid, 2)
    return out


def openapi_document(model: Any, validator: Any, settings: Settings) -> dict[str, Any]:
    schemas: dict[str, Any] = {"ErrorInvocations": ERROR_INVOCATIONS, "ErrorsPredict": ERRORS_PREDICT}
    example: dict[str, Any] = {}
    names: list[str] = []
    if validator is not None:
        patient = validator.patient.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(patient.pop("$defs", {}))
        schemas["Patient"] = patient
        example = _example(model)
        names = list(model.names)
    patient_ref = {"$ref": "#/components/schemas/Patient"} if validator is not None else {"type": "object"}
    features = ", ".join(names) or "(no model loaded)"
    title = f"Type-2 diabetes risk API — {settings.model_name}@{settings.model_alias}"
    if model is not None:
        title += f" (version {model.version})"
    split = {"columns": list(example), "data": [list(example.values())]}
    limits = (
        f"Limits: {settings.max_body_bytes} bytes per body, {settings.max_rows} rows per request (413 beyond), "
        f"{settings.request_timeout_s:g} s of work (504 beyond)."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": model.version if model is not None else "none",
            "description": (
                "MLflow's scoring protocol (/invocations, /ping, /version, MLflow "
                f"{VERSION}) plus a friendly /predict for the clinicians' UI. Features in order: {features}. " + limits
            ),
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Risk for one patient or a list of patients",
                    "parameters": [
                        {"name": "contributions", "in": "query", "schema": {"type": "boolean", "default": True}},
                        {"name": "interval", "in": "query", "schema": {"type": "boolean", "default": False}},
                        {"name": "lang", "in": "query", "schema": {"enum": ["es", "en"], "default": "es"}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": _json_content(
                            {"oneOf": [patient_ref, {"type": "array", "items": patient_ref, "minItems": 1}]}, example
                        ),
                    },
                    "responses": {
                        "200": {"description": "probability, label, risk level and per-feature contributions"},
                        "400": {"description": "malformed body", "content": _json_content(ERRORS_PREDICT)},
                        "413": {"description": "body or row limit exceeded"},
                        "415": {"description": "Content-Type is not application/json"},
                        "422": {
                            "description": "a field breaks a rule (field, rule, message in es/en)",
                            "content": _json_content({"$ref": "#/components/schemas/ErrorsPredict"}),
                        },
                        "503": {"description": "no model loaded"},
                    },
                }
            },
            "/invocations": {
                "post": {
                    "summary": "MLflow scoring protocol",
                    "description": (
                        "Exactly one of dataframe_split, dataframe_records, instances, inputs; optional "
                        "params {contributions: bool}. Also text/csv (header row) and Parquet. Strict: a string "
                        "for a number, a fraction for a whole-number feature or an unknown column is a 400."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "object"},
                                "examples": {
                                    "dataframe_split": {"value": {"dataframe_split": split}},
                                    "dataframe_records": {"value": {"dataframe_records": [example]}},
                                    "inputs": {"value": {"inputs": {k: [v] for k, v in example.items()}}},
                                    "instances": {"value": {"instances": [example]}},
                                    "params": {
                                        "value": {"dataframe_records": [example], "params": {"contributions": True}}
                                    },
                                },
                            },
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": {"description": '{"predictions": [{"probability", "label", "risk_level", ...}]}'},
                        "400": {
                            "description": "invalid input",
                            "content": _json_content({"$ref": "#/components/schemas/ErrorInvocations"}),
                        },
                        "413": {"description": "body or row limit exceeded"},
                        "415": {"description": "missing or unsupported Content-Type"},
                        "504": {"description": "the work took longer than the timeout and was stopped"},
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "ok / degraded (200) or down (503); model, registry reachability, uptime",
                    "responses": {"200": {"description": "ok or degraded"}, "503": {"description": "down"}},
                }
            },
            "/model/info": {
                "get": {
                    "summary": "Version, metrics, feature spec, threshold, risk bands, signature",
                    "responses": {"200": {"description": "model card data for the UI"}},
                }
            },
            "/ping": {"get": {"summary": "MLflow liveness: 200 when a model is loaded", "responses": OK}},
            "/version": {"get": {"summary": "MLflow version", "responses": OK}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": OK}},
        },
        "components": {"schemas": schemas},
    }
