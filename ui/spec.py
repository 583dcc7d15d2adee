"""Helpers over the served feature spec (``/model/info``): never hard-code features, read them from here."""

from __future__ import annotations

from typing import Any

from ui import i18n

Feature = dict[str, Any]


def localized(value: Any, lang: str) -> str:
    """A {es, en} dict from the spec in ``lang`` (falls back to any language, then to str)."""
    if isinstance(value, dict):
        return str(value.get(lang) or value.get("en") or value.get("es") or next(iter(value.values()), ""))
    return "" if value is None else str(value)


def label(feature: Feature, lang: str, with_unit: bool = True) -> str:
    text = localized(feature.get("label"), lang) or feature["name"]
    unit = i18n.unit(feature.get("unit") or "", lang)
    return f"{text} ({unit})" if with_unit and unit else text


def decimal(x: float, lang: str, digits: int | None = None) -> str:
    """A number as a clinician of ``lang`` writes it: decimal comma in Spanish, point in English.

    ``digits`` fixes the decimals; None gives the shortest form (33.6, 21, 0.05)."""
    text = f"{x:g}" if digits is None else f"{x:.{digits}f}"
    return text.replace(".", ",") if lang == "es" else text


def _fmt(x: Any, lang: str) -> str:
    return decimal(x, lang) if isinstance(x, int | float) else str(x)


def range_text(feature: Feature, lang: str) -> str:
    lo, hi, unit = feature.get("min"), feature.get("max"), i18n.unit(feature.get("unit") or "", lang)
    if lo is None and hi is None:
        return ""
    if lo is None:
        return f"≤ {_fmt(hi, lang)} {unit}".strip()
    if hi is None:
        return f"≥ {_fmt(lo, lang)} {unit}".strip()
    return f"{_fmt(lo, lang)}–{_fmt(hi, lang)} {unit}".strip()


def band_for(bands: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((b for b in bands if b.get("name") == name), None)


def format_probability(p: float, lang: str) -> str:
    """The one rounding used wherever a probability is shown (the end-to-end test relies on it): «81,3 %» in
    Spanish, «81.3 %» in English."""
    return f"{decimal(100 * p, lang, 1)} %"


def format_percent(p: float, lang: str) -> str:
    """A whole percentage (risk band limits, thresholds): «20 %»."""
    return f"{decimal(100 * p, lang, 0)} %"
