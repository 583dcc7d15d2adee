"""Pydantic models generated from the served model's feature spec, and bilingual error messages.

The spec (``RiskModel.spec["features"]``) is the single source: adding a feature to the dataset config
changes /predict's validation, /docs and /openapi.json without touching this code.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic_core import PydanticCustomError

from serving.model_store import ServedModel

LANGS = ("es", "en")

# rule key -> (English rule, Spanish message, English message); {…} filled from the feature spec
RULES: dict[str, tuple[str, str, str]] = {
    "required": ("is required", "es obligatorio", "is required"),
    "number": ("must be a number", "debe ser un número", "must be a number"),
    "whole": ("must be a whole number", "debe ser un número entero", "must be a whole number"),
    "range": (
        "must be between {min} and {max}",
        "debe estar entre {min} y {max}",
        "must be between {min} and {max}",
    ),
    "category": ("must be one of {categories}", "debe ser uno de {categories}", "must be one of {categories}"),
    "unknown": ("is not a feature of the model", "no es una variable del modelo", "is not a feature of the model"),
    "object": (
        "each patient must be a JSON object",
        "cada paciente debe ser un objeto JSON",
        "each patient must be a JSON object",
    ),
    "body": (
        "body must be a JSON object or a non-empty array of objects",
        "el cuerpo debe ser un objeto JSON o una lista no vacía de objetos",
        "body must be a JSON object or a non-empty array of objects",
    ),
    "json": ("body must be valid JSON", "el cuerpo debe ser JSON válido", "body must be valid JSON"),
    "bool": ("must be true or false", "debe ser true o false", "must be true or false"),
    "lang": ("must be es or en", "debe ser es o en", "must be es or en"),
    "invalid": ("is not valid", "no es válido", "is not valid"),
}


def error_entry(row: int | None, field: str, rule: str, lang: str, **fmt: Any) -> dict[str, Any]:
    en_rule, es, en = RULES[rule]
    return {
        "row": row,
        "field": field,
        "rule": en_rule.format(**fmt),
        "message": (es if lang == "es" else en).format(**fmt),
    }


def _whole(v: float | None) -> float | None:
    if v is not None and math.isfinite(v) and v != math.floor(v):
        raise PydanticCustomError("whole_number", "must be a whole number")
    return v


def _fmt(x: Any) -> Any:
    """20.0 → 20 in messages, so the rule reads like the form's limits."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def patient_model(model: ServedModel, allow_extra: bool) -> type[BaseModel]:
    """One pydantic model per served version: field per feature with type, range, unit and label."""
    fields: dict[str, Any] = {}
    for f in model.spec["features"]:
        desc = f["label"]["en"] + (f" ({f['unit']})" if f.get("unit") else "")
        if f.get("help"):
            desc += f" — {f['help']['en']}"
        extra = {"x-label": f["label"], "x-unit": f.get("unit") or "", "x-integer": bool(f.get("integer"))}
        if f["type"] == "categorical":
            typ: Any = Literal[tuple(f["categories"])]  # type: ignore[misc]
            constraints: dict[str, Any] = {}
        else:
            typ = Annotated[float, AfterValidator(_whole)] if f.get("integer") else float
            constraints = {k: v for k, v in (("ge", f.get("min")), ("le", f.get("max"))) if v is not None}
        if f.get("optional"):
            typ = typ | None
            default: Any = None
        else:
            default = ...
        fields[f["name"]] = (
            typ,
            Field(default, description=desc, json_schema_extra=extra, strict=True, **constraints),
        )
    config = ConfigDict(extra="ignore" if allow_extra else "forbid", title="Patient")
    return create_model("Patient", __config__=config, **fields)


class Validator:
    """Validates /predict bodies against the generated model and turns pydantic errors into our shape."""

    def __init__(self, model: ServedModel, allow_extra: bool):
        self.features = {f["name"]: f for f in model.spec["features"]}
        self.patient = patient_model(model, allow_extra)
        self.many = TypeAdapter(list[self.patient])  # type: ignore[name-defined]

    def validate(self, rows: list[Any], lang: str) -> tuple[list[BaseModel], list[dict[str, Any]]]:
        try:
            return self.many.validate_python(rows), []
        except ValidationError as exc:
            return [], [self._entry(e, lang) for e in exc.errors(include_input=False, include_url=False)]

    def _entry(self, err: Any, lang: str) -> dict[str, Any]:
        loc = list(err["loc"])
        row = loc[0] if loc and isinstance(loc[0], int) else None
        field = str(loc[1])[:64] if len(loc) > 1 else "body"
        kind = err["type"]
        f = self.features.get(field, {})
        if kind == "missing":
            return error_entry(row, field, "required", lang)
        if kind == "extra_forbidden":
            return error_entry(row, field, "unknown", lang)
        if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            return error_entry(row, field, "range", lang, min=_fmt(f.get("min")), max=_fmt(f.get("max")))
        if kind == "whole_number":
            return error_entry(row, field, "whole", lang)
        if kind in ("literal_error", "enum"):
            return error_entry(row, field, "category", lang, categories=f.get("categories"))
        if kind in ("model_type", "dict_type", "model_attributes_type") and len(loc) == 1:
            return error_entry(row, "body", "object", lang)
        if kind.startswith(("float", "int", "finite")) or kind in ("bool_type", "string_type"):
            return error_entry(row, field, "number", lang)
        return error_entry(row, field, "invalid", lang)
