"""The input rules of the served spec, applied to one value as a clinician typed it (form field or CSV cell).

One function for the individual form and the batch check, so both say the same thing about the same value:
required, number (a decimal comma is read as a decimal point: «33,6» is 33.6, never 336), range, whole
number, category. The API validates again; this runs first so every problem is shown before anything is sent.
"""

from __future__ import annotations

import math
from typing import Any

Feature = dict[str, Any]


def parse_number(text: str) -> float | None:
    """``text`` as a number, or None when it is not one. One decimal separator, comma or point; no thousands
    separators (clinical values never need them, and «1.000» would be ambiguous)."""
    s = text.strip().replace(",", ".")
    if s.count(".") > 1:
        return None
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def check(feature: Feature, raw: Any) -> tuple[Any, str | None]:
    """(parsed value or None, rule broken or None). Rules: required, not_number, out_of_range, not_integer,
    not_category. An empty optional value is (None, None): not measured."""
    text = "" if raw is None else str(raw).strip()
    if not text:
        return None, None if feature.get("optional") else "required"
    if feature.get("type") == "categorical":
        cats = [str(c) for c in (feature.get("categories") or [])]
        return (text, None) if text in cats else (None, "not_category")
    value = parse_number(text)
    if value is None:
        return None, "not_number"
    lo, hi = feature.get("min"), feature.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return None, "out_of_range"
    if feature.get("integer") and value != math.floor(value):
        return None, "not_integer"
    return value, None
