"""Confirmed outcomes from a CSV (read by the patients' reader, ui/batch.read_csv): checked row by row, and
turned into the JSON the API's POST /feedback takes (serving/feedback.py).

Columns (names compared ignoring case and surrounding spaces; others are ignored, so the scored file the batch
page downloads can be sent back once the three outcome columns are filled in):

- ``request_id`` and ``row`` (optional, 0 when absent or empty): the prediction, as the scored file names it;
- ``diabetes``: yes/no (sí/no, true/false) or 1/0;
- ``test``: the confirming test as the API names it — ``hba1c``, ``fasting_glucose`` or ``ogtt`` (any case;
  a space or hyphen for the underscore);
- ``test_date``: ``YYYY-MM-DD``; in Spanish also ``DD/MM/YYYY`` (day first). Not in the future.

A row whose three outcome cells are all empty is *pending* (a patient with no confirmed result yet): skipped,
counted, not an error. Problems are codes (translated by the page) with the column, never the cell's value.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

REQUIRED = ("request_id", "diabetes", "test", "test_date")
OPTIONAL = ("row",)
OUTCOME_CELLS = ("diabetes", "test", "test_date")
TESTS = ("hba1c", "fasting_glucose", "ogtt")  # the values serving/feedback.py accepts
TEMPLATE = ",".join((REQUIRED[0], OPTIONAL[0], *REQUIRED[1:])) + "\n"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # the API's rule for a request id
_YES = {"1", "yes", "y", "si", "s", "true", "verdadero"}
_NO = {"0", "no", "n", "false", "falso"}
_DAY_FIRST = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
# Every problem code (worded by the page as ``outcome_rule_<code>``): the CSV's own, then the API's answers.
RULES = ("required", "bad_request_id", "bad_row", "bad_yes_no", "bad_test", "bad_date", "future_date", "duplicate",
         "not_found", "api_invalid")  # fmt: skip


@dataclass
class Problem:
    row: int  # 1-based data row (the header does not count), as on the patients' report
    field: str  # a column name, or "" for the row as a whole
    rule: str  # one of RULES
    detail: str = ""  # the earlier row of a duplicate; never a cell's value


@dataclass
class Check:
    total: int
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # JSON-ready, for POST /feedback
    rows: list[int] = field(default_factory=list)  # the CSV row of each outcome
    problems: list[Problem] = field(default_factory=list)
    pending: int = 0
    missing_columns: list[str] = field(default_factory=list)
    duplicate_columns: list[str] = field(default_factory=list)

    @property
    def invalid_rows(self) -> int:
        return len({p.row for p in self.problems if p.row > 0})


def _fold(text: str) -> str:
    """Lower case without accents («Sí» → «si»)."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").strip().lower()


def parse_yes_no(cell: str) -> bool | None:
    v = _fold(cell)
    return True if v in _YES else False if v in _NO else None


def parse_test(cell: str) -> str | None:
    v = re.sub(r"[\s-]+", "_", cell.strip().lower())
    return v if v in TESTS else None


def parse_date(cell: str, lang: str) -> date | None:
    v = cell.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            return date.fromisoformat(v)
        m = _DAY_FIRST.fullmatch(v)
        if m and lang == "es":  # English readers may mean month first: only the unambiguous form there
            return date(int(m[3]), int(m[2]), int(m[1]))
    except ValueError:
        return None
    return None


def parse_row(cell: str | None) -> int | None:
    """0 when empty; a whole number >= 0 (``3``, or ``3.0``/``3,0`` as a spreadsheet may rewrite it)."""
    if cell is None or not cell.strip():
        return 0
    v = cell.strip().replace(",", ".")
    try:
        number = float(v)
    except ValueError:
        return None
    return int(number) if number.is_integer() and 0 <= number < 2**31 else None


def validate(frame: pd.DataFrame, lang: str, today: date | None = None) -> Check:
    """Every row checked; the valid ones as the API's outcome objects. ``today`` (UTC) bounds the test date."""
    today = today or datetime.now(UTC).date()
    check = Check(total=len(frame))
    positions: dict[str, list[int]] = {}
    for i, c in enumerate(frame.columns):
        positions.setdefault(str(c).strip().lower(), []).append(i)
    cols: dict[str, int] = {}
    for name in (*REQUIRED, *OPTIONAL):
        found = positions.get(name, [])
        if len(found) > 1:
            check.duplicate_columns.append(name)
        elif found:
            cols[name] = found[0]
        elif name in REQUIRED:
            check.missing_columns.append(name)
    if check.missing_columns or check.duplicate_columns:
        return check
    seen: dict[tuple[str, int], int] = {}
    for n, values in enumerate(frame.itertuples(index=False, name=None), start=1):
        cell = {k: (None if values[j] is None or not str(values[j]).strip() else str(values[j]).strip())
                for k, j in cols.items()}  # fmt: skip
        if all(cell.get(k) is None for k in OUTCOME_CELLS):
            check.pending += 1
            continue
        bad: list[Problem] = []
        rid = cell.get("request_id")
        if rid is None:
            bad.append(Problem(n, "request_id", "required"))
        elif not _REQUEST_ID.fullmatch(rid):
            bad.append(Problem(n, "request_id", "bad_request_id"))
        row = parse_row(cell.get("row"))
        if row is None:
            bad.append(Problem(n, "row", "bad_row"))
        diabetes = parse_yes_no(cell["diabetes"]) if cell.get("diabetes") is not None else None
        if cell.get("diabetes") is None:
            bad.append(Problem(n, "diabetes", "required"))
        elif diabetes is None:
            bad.append(Problem(n, "diabetes", "bad_yes_no"))
        test = parse_test(cell["test"]) if cell.get("test") is not None else None
        if cell.get("test") is None:
            bad.append(Problem(n, "test", "required"))
        elif test is None:
            bad.append(Problem(n, "test", "bad_test"))
        when = parse_date(cell["test_date"], lang) if cell.get("test_date") is not None else None
        if cell.get("test_date") is None:
            bad.append(Problem(n, "test_date", "required"))
        elif when is None:
            bad.append(Problem(n, "test_date", "bad_date"))
        elif when > today:
            bad.append(Problem(n, "test_date", "future_date"))
        if not bad and rid is not None and row is not None:
            key = (rid, row)
            if key in seen:
                bad.append(Problem(n, "request_id", "duplicate", str(seen[key])))
            else:
                seen[key] = n
        if bad:
            check.problems.extend(bad)
            continue
        assert rid is not None and row is not None and when is not None
        check.outcomes.append({"request_id": rid, "row": row, "diabetes": diabetes, "test": test,
                               "test_date": when.isoformat()})  # fmt: skip
        check.rows.append(n)
    return check


@dataclass
class Sent:
    """What the API did with the outcomes sent (counts over every chunk, problems by CSV row)."""

    stored: int = 0
    not_found: int = 0
    invalid: int = 0
    problems: list[Problem] = field(default_factory=list)


def merge(sent: Sent, answer: dict[str, Any], rows: list[int]) -> None:
    """Add one /feedback answer for the outcomes of CSV ``rows`` (in the order sent) to ``sent``."""
    sent.stored += int(answer.get("stored", 0))
    sent.not_found += int(answer.get("not_found", 0))
    sent.invalid += int(answer.get("invalid", 0))
    for p in answer.get("problems", []):
        index = p.get("index")
        row = rows[index] if isinstance(index, int) and 0 <= index < len(rows) else 0
        if p.get("status") == "not_found":
            sent.problems.append(Problem(row, "request_id", "not_found"))
            continue
        for e in p.get("errors") or [{"field": "", "rule": ""}]:
            # The API's rule text is English and names no value; shown after our own code's words.
            sent.problems.append(Problem(row, str(e.get("field", "")), "api_invalid", str(e.get("rule", ""))))
