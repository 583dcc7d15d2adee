"""Pydantic models generated from the served model's feature spec, and bilingual error messages.

The spec (``RiskModel.spec["features"]``) is the single source: adding a feature to the dataset config
changes /predict's validation, /docs and /openapi.json without touching this code.
"""

from __future__ import annotations

import math
from collections import Counter
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
    "unknown": (
        "{n} unknown field(s) (not features of this model); expected: {names}",
        "{n} campo(s) desconocido(s) (no son variables del modelo); se esperan: {names}",
        "{n} unknown field(s) (not features of this model); expected: {names}",
    ),
    "finite": ("must be a finite number", "debe ser un número finito", "must be a finite number"),
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
    "no_interval": (
        "this model version has no bootstrap ensemble; retrain it to get intervals",
        "esta versión del modelo no tiene conjunto bootstrap; reentrénela para obtener intervalos",
        "this model version has no bootstrap ensemble; retrain it to get intervals",
    ),
}


def error_entry(row: int | None, field: str, rule: str, lang: str, **fmt: Any) -> dict[str, Any]:
    en_rule, es, en = RULES[rule]
    return {
        "row": row,
        "field": field,
        "rule": en_rule.format(**fmt),
        "message": (es if lang == "es" else en).format(**fmt),
    }


def _finite(v: float | None) -> float | None:
    # ±inf (1e400 in JSON) and NaN are not measurements; bounded features already refuse them by range.
    if v is not None and not math.isfinite(v):
        raise PydanticCustomError("finite_number", "must be a finite number")
    return v


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
            # A Literal of the category strings: pydantic refuses any non-string (0, 1.0, true) for it in lax
            # mode too, and 'strict' cannot be applied to a literal schema (pydantic refuses to build it).
            typ: Any = Literal[tuple(f["categories"])]  # type: ignore[misc]
        else:
            # strict: no "86" → 86 and no true → 1; constraints sit on the float itself so they also apply
            # inside `| None`.
            constraints = {k: v for k, v in (("ge", f.get("min")), ("le", f.get("max"))) if v is not None}
            validators = [AfterValidator(_finite)] + ([AfterValidator(_whole)] if f.get("integer") else [])
            typ = Annotated[float, Field(strict=True, **constraints), *validators]
        if f.get("optional"):
            typ = typ | None
            default: Any = None
        else:
            default = ...
        fields[f["name"]] = (typ, Field(default, description=desc, json_schema_extra=extra))
    config = ConfigDict(extra="ignore" if allow_extra else "forbid", title="Patient")
    return create_model("Patient", __config__=config, **fields)


class Validator:
    """Validates /predict bodies against the generated model and turns pydantic errors into our shape."""

    CHUNK = 1024  # rows validated between deadline checks

    def __init__(self, model: ServedModel, allow_extra: bool):
        self.features = {f["name"]: f for f in model.spec["features"]}
        self.names = ", ".join(model.names)
        self.patient = patient_model(model, allow_extra)
        self.many = TypeAdapter(list[self.patient])  # type: ignore[name-defined]

    def validate(
        self, rows: list[Any], lang: str, deadline: Any = None
    ) -> tuple[list[BaseModel], list[dict[str, Any]]]:
        """Validate in chunks so ``deadline.check()`` (REQUEST_TIMEOUT_S) bounds the work on a big body."""
        patients: list[BaseModel] = []
        errors: list[dict[str, Any]] = []
        for start in range(0, len(rows), self.CHUNK):
            if deadline is not None:
                deadline.check()
            try:
                patients += self.many.validate_python(rows[start : start + self.CHUNK])
            except ValidationError as exc:
                errors += self._entries(exc.errors(include_input=False, include_url=False), start, lang)
        return ([], errors) if errors else (patients, [])

    def _entries(self, errs: list[Any], offset: int, lang: str) -> list[dict[str, Any]]:
        out, unknown = [], Counter()
        for e in errs:
            if e["type"] == "extra_forbidden":  # the key is the client's (maybe data): counted, never named
                unknown[e["loc"][0] + offset if e["loc"] and isinstance(e["loc"][0], int) else None] += 1
            else:
                out.append(self._entry(e, offset, lang))
        for row, n in unknown.items():
            out.append(error_entry(row, "body", "unknown", lang, n=n, names=self.names))
        return out

    def _entry(self, err: Any, offset: int, lang: str) -> dict[str, Any]:
        loc = list(err["loc"])
        row = loc[0] + offset if loc and isinstance(loc[0], int) else None
        field = str(loc[1]) if len(loc) > 1 and loc[1] in self.features else "body"
        kind = err["type"]
        f = self.features.get(field, {})
        if kind == "missing":
            return error_entry(row, field, "required", lang)
        bounded = f.get("min") is not None and f.get("max") is not None
        if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than") or (
            kind == "finite_number" and bounded
        ):
            return error_entry(row, field, "range", lang, min=_fmt(f.get("min")), max=_fmt(f.get("max")))
        if kind == "finite_number":
            return error_entry(row, field, "finite", lang)
        if kind == "whole_number":
            return error_entry(row, field, "whole", lang)
        if kind in ("literal_error", "enum"):
            return error_entry(row, field, "category", lang, categories=f.get("categories"))
        if kind in ("model_type", "dict_type", "model_attributes_type") and len(loc) == 1:
            return error_entry(row, "body", "object", lang)
        if kind.startswith(("float", "int", "finite")) or kind in ("bool_type", "string_type"):
            return error_entry(row, field, "number", lang)
        return error_entry(row, field, "invalid", lang)
