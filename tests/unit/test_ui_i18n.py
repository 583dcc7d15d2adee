"""Every UI string exists in both languages, with the same placeholders; and every key the code uses exists."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

from ui.batch import RESULT_COLUMNS
from ui.i18n import LANGS, STRINGS, UNITS, tr
from ui.outcomes import RULES as OUTCOME_RULES

UI = Path(__file__).resolve().parents[2] / "ui"


def gate_codes() -> set[str]:
    """Every code pipeline/registry.py records in `gate_reason_codes`: the second argument of each
    `result.add(text, code, ...)` (read from the source: importing the pipeline would import MLflow)."""
    tree = ast.parse((UI.parent / "pipeline" / "registry.py").read_text(encoding="utf-8"))
    return {
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add"
        and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
    }  # fmt: skip


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_has_every_language() -> None:
    for key, entry in {**STRINGS, **{f"unit:{u}": v for u, v in UNITS.items()}}.items():
        assert set(entry) == set(LANGS), key
        for lang in LANGS:
            assert entry[lang].strip(), f"{key}/{lang} is empty"


def test_placeholders_match_across_languages() -> None:
    for key, entry in STRINGS.items():
        assert placeholders(entry["es"]) == placeholders(entry["en"]), key


def test_every_key_used_in_the_code_exists() -> None:
    used: set[str] = set()
    for path in UI.rglob("*.py"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z0-9_]+)["']""", path.read_text(encoding="utf-8")))
    used |= {
        f"rule_{r}"
        for r in (
            "missing_column",
            "duplicate_column",
            "required",
            "not_number",
            "out_of_range",
            "not_integer",
            "not_category",
            "extra_fields",
        )
    }  # built as t(f"rule_{p.rule}") in components.problem_text
    used |= {f"col_{c}" for c in RESULT_COLUMNS}  # built in ui/scored.py
    used |= {f"outcome_rule_{r}" for r in OUTCOME_RULES}  # built in ui/views/batch.py (confirmed outcomes)
    used |= {f"gate_reason_{c}" for c in gate_codes()}  # built in components.gate_reasons
    assert used, "no t(...) calls found"
    assert sorted(used - set(STRINGS)) == []


def test_spanish_is_the_default_and_unknown_languages_fall_back() -> None:
    assert LANGS[0] == "es"
    assert tr("submit", "xx") == STRINGS["submit"]["es"]
    assert tr("row_n", "en", n=3) == "Row 3"
