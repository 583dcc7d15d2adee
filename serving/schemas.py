"""The API's pydantic models (the OpenAPI document is generated from them) and /predict's bilingual error
entries.

The served model's features become a ``Patient`` model built from the spec at prepare time
(``patient_model``): adding a feature to the dataset config changes /docs and /openapi.json without touching
this code. Requests are validated by ``common.validation`` (the spec's rules, shared by both routes), not by
these models, which document the same rules.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from common.validation import Problem

LANGS = ("es", "en")
Lang = Literal["es", "en"]

# rule key -> (Spanish message, English message); {…} filled from the feature spec. The English text of the
# spec's rules words them as common.validation.RULES does (tests/unit/test_conformance.py checks it).
MESSAGES: dict[str, tuple[str, str]] = {
    "required": ("es obligatorio", "is required"),
    "number": ("debe ser un número", "must be a number"),
    "whole": ("debe ser un número entero", "must be a whole number"),
    "range": ("debe estar entre {min} y {max}", "must be between {min} and {max}"),
    "at_least": ("debe ser como mínimo {min}", "must be at least {min}"),
    "at_most": ("debe ser como máximo {max}", "must be at most {max}"),
    "finite": ("debe ser un número finito", "must be a finite number"),
    "category": ("debe ser uno de {categories}", "must be one of {categories}"),
    "unknown": (
        "{in_row} campo(s) desconocido(s) (no son variables del modelo); se esperan: {names}",
        "{in_row} unknown field(s) (not features of this model); expected: {names}",
    ),
    "object": ("cada paciente debe ser un objeto JSON", "each patient must be a JSON object"),
    "body": (
        "el cuerpo debe ser un objeto JSON o una lista no vacía de objetos",
        "body must be a JSON object or a non-empty array of objects",
    ),
    "json": ("el cuerpo debe ser JSON válido", "body must be valid JSON"),
    "duplicate": (
        "clave repetida en un objeto JSON: cada campo puede aparecer una sola vez",
        "duplicate key in a JSON object: each field may appear only once",
    ),
    "columns": (
        "demasiados campos en un objeto: el límite es {max}",
        "too many fields in an object: the limit is {max}",
    ),
    "value_chars": (
        "un nombre de campo o un texto tiene más de {max} caracteres",
        "a field name or text value is longer than {max} characters",
    ),
    "bool": ("debe ser true o false", "must be true or false"),
    "lang": ("debe ser es o en", "must be es or en"),
    "no_interval": (
        "esta versión del modelo no tiene conjunto bootstrap; reentrénela para obtener intervalos",
        "this model version has no bootstrap ensemble; retrain it to get intervals",
    ),
}


def entry(row: int | None, field: str, key: str, lang: str, **params: Any) -> dict[str, Any]:
    es, en = MESSAGES[key]
    message = (es if lang == "es" else en).format(**params)
    return {"row": row, "field": field, "rule": en.format(**params), "message": message}


def problem_entries(problems: list[Problem], lang: str) -> list[dict[str, Any]]:
    """Rule violations → one entry per row and field, in row order. Unknown keys are counted, never named."""
    out = []
    for p in problems:
        field = p.field or "body"
        for row in p.rows or (None,):
            out.append(entry(row, field, p.rule, lang, **p.params))
    out.sort(key=lambda e: -1 if e["row"] is None else e["row"])
    return out


# ---- documented shapes ------------------------------------------------------------------------------------
class MlflowError(BaseModel):
    """MLflow's error shape; the message names field and rule, never a submitted value."""

    error_code: str = Field(examples=["INVALID_PARAMETER_VALUE"])
    message: str


class ErrorEntry(BaseModel):
    row: int | None = Field(description="0-based patient position; null for the whole body")
    field: str = Field(description="feature name, or 'body'")
    rule: str = Field(description="the rule, in English")
    message: str = Field(description="the rule in the language chosen with ?lang")


class PredictError(BaseModel):
    request_id: str
    error: str | None = Field(None, description="413/415/503/504: what went wrong")
    errors: list[ErrorEntry] = Field(description="400/422: one entry per row and field")


class ModelRef(BaseModel):
    name: str
    version: str


class Prediction(BaseModel):
    probability: float = Field(ge=0, le=1)
    label: Literal[0, 1]
    risk_level: str = Field(description="the risk band's name (model/info risk_bands)")
    baseline: float | None = Field(None, description="logit of the reference patient (with contributions)")
    logit: float | None = Field(None, description="baseline + sum of contributions (with contributions)")
    contributions: dict[str, float] | None = Field(None, description="per feature, on the logit scale")
    probability_low: float | None = Field(None, ge=0, le=1, description="90 % bootstrap interval (with interval)")
    probability_high: float | None = Field(None, ge=0, le=1, description="90 % bootstrap interval (with interval)")


class PredictResponse(BaseModel):
    request_id: str
    model: ModelRef
    predictions: list[Prediction]


class InvocationsResponse(BaseModel):
    """MLflow's records output; with params.contributions also logit, baseline and contrib_<feature>."""

    predictions: list[dict[str, float | int | str]]


class HealthModel(BaseModel):
    name: str
    version: str | None
    alias: str


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"]
    reason: str | None
    model: HealthModel
    registry_reachable: bool
    uptime_s: float


class ModelInfo(BaseModel):
    """The served version and everything its spec says (features, metrics, risk bands, ...)."""

    model_config = ConfigDict(extra="allow")
    name: str
    version: str
    alias: str
    run_id: str
    created_at: str
    source: Literal["registry", "cache"]
    features: list[dict[str, Any]]
    signature: dict[str, Any]


class Unavailable(BaseModel):
    error: str


class AuthFailure(BaseModel):
    """A refused credential (serving/auth.py); never echoes the credential."""

    error_code: Literal["UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "TEMPORARILY_UNAVAILABLE"]
    message: str
    request_id: str


class FieldRule(BaseModel):
    field: str = Field(description="the field, or 'body'")
    rule: str = Field(description="the rule it breaks, in English; never the submitted value")


class FeedbackStored(BaseModel):
    """One outcome stored (a second one for the same prediction replaces the first)."""

    request_id: str
    row: int
    stored: Literal[True]


class FeedbackProblem(BaseModel):
    index: int = Field(description="0-based position of the item in the array")
    status: Literal["invalid", "not_found"]
    errors: list[FieldRule]


class FeedbackBulk(BaseModel):
    """An array of outcomes: the valid ones whose prediction is logged stored in one transaction."""

    stored: int
    not_found: int
    invalid: int
    problems: list[FeedbackProblem] = Field(description="one per item not stored, in item order")


class FeedbackError(BaseModel):
    error: str | None = Field(None, description="409/413/415/503: what went wrong")
    errors: list[FieldRule] = Field(default_factory=list, description="400/404/422: one entry per field")


def patient_model(features: list[dict[str, Any]], allow_extra: bool) -> type[BaseModel]:
    """The served version's patient: one field per feature with its type (integer features as integers),
    range, unit and label, required unless the spec says optional."""
    fields: dict[str, Any] = {}
    for f in features:
        desc = f["label"]["en"] + (f" ({f['unit']})" if f.get("unit") else "")
        if f.get("help"):
            desc += f" — {f['help']['en']}"
        extra = {"x-label": f["label"], "x-unit": f.get("unit") or ""}
        if f["type"] == "categorical":
            typ: Any = Literal[tuple(f["categories"])]  # type: ignore[misc]
        else:
            bounds = {k: v for k, v in (("ge", f.get("min")), ("le", f.get("max"))) if v is not None}
            typ = Annotated[int if f.get("integer") else float, Field(**bounds)]
        if f.get("optional"):
            typ, default = typ | None, None
        else:
            default = ...
        fields[f["name"]] = (typ, Field(default, description=desc, json_schema_extra=extra))
    config = ConfigDict(extra="ignore" if allow_extra else "forbid", title="Patient")
    return create_model("Patient", __config__=config, **fields)
