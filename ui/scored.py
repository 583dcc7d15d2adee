"""The scored file: the clinic's own columns, then the results, for people or for other programs.

- For people (default): result columns named in the app's language, risk level and classification in words,
  the probability in percent, and every number (the clinic's parsed feature values too) with the language's
  decimal separator; Spanish files use `;` between fields, as Spanish spreadsheets expect with a decimal comma.
- For other programs: the API's column names and codes (probability as a fraction, label 0/1), decimal point,
  comma-separated UTF-8.

A result column never overwrites a clinic column of the same name: it gets a suffix, and the page says so.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ui import spec
from ui.batch import RESULT_COLUMNS, Validation
from ui.i18n import tr

HUMAN, MACHINE = "human", "machine"


def column_names(lang: str, mode: str) -> dict[str, str]:
    """Result column -> its name in the file."""
    if mode == MACHINE:
        return {c: c for c in RESULT_COLUMNS}
    return {c: tr(f"col_{c}", lang) for c in RESULT_COLUMNS}


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... when the clinic already has a column of that name (any case)."""
    lowered = {t.lower() for t in taken}
    new, k = name, 1
    while new.lower() in lowered:
        k += 1
        new = f"{name}_{k}"
    return new


def _number(x: float, lang: str, mode: str) -> str:
    return format(x, ".15g") if mode == MACHINE else spec.decimal(x, lang)


def _cell(column: str, value: Any, lang: str, mode: str, band_labels: dict[str, str]) -> str | None:
    """One result cell as the file writes it; None (an empty cell) where the row was not scored."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if column == "probability":
        return _number(value, lang, mode) if mode == MACHINE else spec.decimal(100 * value, lang, 1)
    if column == "label":
        return str(int(value)) if mode == MACHINE else tr("label_positive" if int(value) else "label_negative", lang)
    if column == "risk_level" and mode == HUMAN:
        return band_labels.get(value, value)
    return str(value)


def table(
    validation: Validation,
    results: pd.DataFrame,
    features: list[spec.Feature],
    bands: list[dict[str, Any]],
    lang: str,
    mode: str,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(the file's table as text cells, [(result column's usual name, the name it got)] for renamed ones)."""
    out = validation.frame.copy()
    for f in features:  # parsed feature values written with the file's decimal separator; bad cells as typed
        col = validation.columns.get(f["name"])
        if col is None or f.get("type") == "categorical":
            continue
        parsed = validation.values[f["name"]]
        out[col] = [_number(v, lang, mode) if pd.notna(v) else raw for v, raw in zip(parsed, out[col], strict=True)]
    band_labels = {b["name"]: spec.localized(b.get("label"), lang) for b in bands}
    cells = {c: [_cell(c, v, lang, mode, band_labels) for v in results[c]] for c in RESULT_COLUMNS}
    renamed = []
    taken = set(out.columns)
    for c, name in column_names(lang, mode).items():
        free = _free_name(name, taken)
        if free != name:
            renamed.append((name, free))
        taken.add(free)
        out[free] = list(cells[c])
    return out, renamed


def to_csv(frame: pd.DataFrame, lang: str, mode: str) -> bytes:
    """CSV bytes. For people: UTF-8 with BOM (Excel then reads accents right), `;` in Spanish."""
    if mode == MACHINE:
        return frame.to_csv(index=False).encode("utf-8")
    return frame.to_csv(index=False, sep=";" if lang == "es" else ",").encode("utf-8-sig")
