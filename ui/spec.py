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


def _fmt(x: Any) -> str:
    return f"{x:g}" if isinstance(x, int | float) else str(x)


def range_text(feature: Feature, lang: str) -> str:
    lo, hi, unit = feature.get("min"), feature.get("max"), i18n.unit(feature.get("unit") or "", lang)
    if lo is None and hi is None:
        return ""
    if lo is None:
        return f"≤ {_fmt(hi)} {unit}".strip()
    if hi is None:
        return f"≥ {_fmt(lo)} {unit}".strip()
    return f"{_fmt(lo)}–{_fmt(hi)} {unit}".strip()


def number_input_args(feature: Feature) -> dict[str, Any]:
    """min/max/step/format for st.number_input: ints for whole-number features (Streamlit needs one numeric
    type across min, max and step), floats with a step sized to the range otherwise."""
    lo, hi = feature.get("min"), feature.get("max")
    if feature.get("integer"):
        return {
            "min_value": None if lo is None else int(lo),
            "max_value": None if hi is None else int(hi),
            "step": 1,
            "format": "%d",
        }
    span = (hi - lo) if lo is not None and hi is not None else 100.0
    step, fmt = (1.0, "%.1f") if span > 50 else (0.1, "%.2f") if span > 5 else (0.01, "%.3f")
    return {
        "min_value": None if lo is None else float(lo),
        "max_value": None if hi is None else float(hi),
        "step": step,
        "format": fmt,
    }


def band_for(bands: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((b for b in bands if b.get("name") == name), None)


def format_probability(p: float) -> str:
    """The one rounding used wherever a probability is shown (the end-to-end test relies on it)."""
    return f"{100 * p:.1f} %"
