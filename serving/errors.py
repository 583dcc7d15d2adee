"""Errors a request can end in, and the one table from HTTP status to MLflow's error codes."""

from __future__ import annotations

import time
from typing import Any

from common.validation import Problem

# MLflow's scoring server answers these codes; statuses not listed here are request-shape problems.
ERROR_CODES = {
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
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.problems = problems or []
        self.rule = rule  # a malformed body's rule key (serving.schemas.MESSAGES), for /predict's entries
        self.row = row

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
            raise InputError(f"request took longer than {self.seconds:g} s and was stopped", status=504)


def unavailable() -> InputError:
    return InputError("no model is loaded yet", status=503)


def too_many_rows(max_rows: int) -> InputError:
    return InputError(f"too many rows: the limit is {max_rows} per request", status=413)


def error_doc(err: InputError) -> dict[str, Any]:
    """MLflow's error body."""
    return {"error_code": err.error_code, "message": err.message}
