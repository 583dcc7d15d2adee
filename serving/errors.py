"""Errors a request can end in, and the one table from HTTP status to MLflow's error codes."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from typing import Any

from common.validation import Problem

# MLflow's scoring server answers these codes; statuses not listed here are request-shape problems.
ERROR_CODES = {
    408: "DEADLINE_EXCEEDED",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class InputError(Exception):
    """A request the model cannot score. ``status`` is the HTTP status; the message holds no values.
    ``problems`` are rule violations by the data (field, rule, rows); empty for a malformed request."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        problems: list[Problem] | None = None,
        rule: str | None = None,
        row: int | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.problems = problems or []
        self.rule = rule  # a malformed body's rule key (serving.schemas.MESSAGES), for /predict's entries
        self.row = row
        self.params = params or {}  # the rule's parameters (a limit), for /predict's message in es/en
        self.headers = headers or {}  # extra response headers (Retry-After, Connection)

    @property
    def error_code(self) -> str:
        # The codes MLflow gives: data that breaks the schema vs. a malformed request.
        if self.status in ERROR_CODES:
            return ERROR_CODES[self.status]
        return "INVALID_PARAMETER_VALUE" if self.problems else "BAD_REQUEST"


def problems_error(problems: list[Problem]) -> InputError:
    """All rule violations in one message: ``field: rule (rows: n)``."""
    parts = []
    for p in problems:
        n = len(p.rows)
        parts.append((f"{p.field}: " if p.field else "") + p.text + (f" (rows: {n})" if n and p.field else ""))
    return InputError(f"Invalid input: {'; '.join(parts)}", problems=problems)


class Deadline:
    """Cooperative request timeout: long loops call ``check()`` and stop once the time is up."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.seconds = seconds

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise self.error()

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def error(self) -> InputError:
        return InputError(f"request took longer than {self.seconds:g} s and was stopped", status=504)


def unavailable() -> InputError:
    return InputError("no model is loaded yet", status=503)


def too_many_rows(max_rows: int) -> InputError:
    return InputError(f"too many rows: the limit is {max_rows} per request", status=413)


def too_many_columns(max_columns: int, what: str = "columns") -> InputError:
    message = f"too many {what}: the limit is {max_columns} (MAX_COLUMNS)"
    return InputError(message, status=413, rule="columns", params={"max": max_columns})


def value_too_long(max_chars: int, what: str = "a value") -> InputError:
    message = f"{what} is longer than {max_chars} characters (MAX_VALUE_CHARS)"
    return InputError(message, status=413, rule="value_chars", params={"max": max_chars})


def duplicate(kind: str, name: str, nameable: Collection[str]) -> InputError:
    """A repeated JSON key or column name: which copy is meant is ambiguous (JSON parsers keep the last one
    silently, pandas renames the second), so the request is refused instead of guessed. The name is shown only
    when it is one of ``nameable`` (the model's or the format's own), never a client's own key."""
    shown = f"{kind} '{name}'" if name in nameable else kind
    return InputError(f"duplicate {shown}: each may appear only once", rule="duplicate")


def first_repeated(names: Iterable[str]) -> str:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    raise ValueError("no repeated name")


def error_doc(err: InputError) -> dict[str, Any]:
    """MLflow's error body."""
    return {"error_code": err.error_code, "message": err.message}
