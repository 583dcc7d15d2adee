"""The input rules of the served spec, applied to one value as a clinician typed it (form field or CSV cell).

Text is read here (a decimal comma is a decimal point: «33,6» is 33.6, never 336); the rules themselves are
``common.validation.FeatureRules``, the ones the API and the pyfunc apply, so the app never says something else
about the same value (``tests/unit/test_ui_rules_conformance.py`` runs the shared case table through here).
One function for the individual form and the batch check. The API validates again; this runs first so every
problem is shown before anything is sent.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

from common.validation import FeatureRules

Feature = dict[str, Any]

# FeatureRules' rule keys → this app's message keys (``rule_*`` in ui/i18n.py); the range is written from the spec.
UI_RULE = {
    "required": "required",
    "number": "not_number",
    "range": "out_of_range",
    "at_least": "out_of_range",
    "at_most": "out_of_range",
    "finite": "out_of_range",
    "whole": "not_integer",
    "category": "not_category",
}


def parse_number(text: str) -> float | None:
    """``text`` as a finite number, or None when it is not one («nan» and «inf» are words, not measurements).
    One decimal separator, comma or point; no thousands separators (clinical values never need them, and
    «1.000» would be ambiguous)."""
    s = text.strip().replace(",", ".")
    if s.count(".") > 1:
        return None
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@lru_cache(maxsize=256)
def _rules(feature_json: str) -> FeatureRules:
    return FeatureRules([{"type": "numeric", **json.loads(feature_json)}])  # numeric unless the spec says so


def check(feature: Feature, raw: Any) -> tuple[Any, str | None]:
    """(parsed value or None, rule broken or None). Rules (ui/i18n.py keys): required, not_number, out_of_range,
    not_integer, not_category. An empty optional value is (None, None): not measured."""
    rules = _rules(json.dumps(feature, sort_keys=True))
    text = "" if raw is None else str(raw).strip()
    if not text:
        x = math.nan
    elif feature.get("type") == "categorical":
        code = rules.value(0, text)
        if code is None:
            return None, "not_category"
        x = code
    else:
        parsed = parse_number(text)
        if parsed is None:
            return None, "not_number"
        x = parsed
    broken = rules.value_problem(0, x)
    if broken is not None:
        return None, UI_RULE[broken[0]]
    if x != x:
        return None, None
    return (text if feature.get("type") == "categorical" else x), None
