"""One table of input cases, derived from a model's feature spec, that every path checking input must agree on:
/invocations and /predict (tests/unit/test_conformance.py), the pyfunc (``RiskModel.predict``), and — by
calling ``value_cases`` with the same spec — the training data check (tests/unit/test_training_data_rules.py)
and the app's form and batch check (ui/rules.py, tests/unit/test_ui_rules_conformance.py).

A ``ValueCase`` is one patient (a valid example with one change) and what every path must answer: accepted,
or refused naming ``field`` for ``rule`` (a key of ``common.validation.RULES``). A ``TransportCase`` is about
the request itself (content type, encoding), so it applies to the HTTP routes only.

Missing values: ``None`` (JSON null), NaN (what MLflow's client writes) and an absent key all mean "not
measured": fine for an optional feature, "is required" for the others.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

ABSENT = object()  # the key is left out of the patient


@dataclass(frozen=True)
class ValueCase:
    id: str
    change: dict[str, Any]  # feature → value (ABSENT: leave the key out)
    field: str | None = None  # None: accepted
    rule: str | None = None

    @property
    def accepted(self) -> bool:
        return self.field is None

    def patient(self, base: dict[str, Any]) -> dict[str, Any]:
        row = dict(base)
        for k, v in self.change.items():
            if v is ABSENT:
                row.pop(k, None)
            else:
                row[k] = v
        return row


@dataclass(frozen=True)
class TransportCase:
    id: str
    content_type: str | None  # None: no Content-Type header
    encoding: str = "utf-8"
    status: int = 200  # what every route answers

    def body(self, doc: Any) -> bytes:
        return json.dumps(doc).encode(self.encoding)


def example(features: list[dict[str, Any]]) -> dict[str, Any]:
    """A valid patient for any spec: the range midpoint (whole for integer features), the first category."""
    out: dict[str, Any] = {}
    for f in features:
        if f["type"] == "categorical":
            out[f["name"]] = f["categories"][0]
        else:
            lo, hi = f.get("min"), f.get("max")
            if lo is not None and hi is not None:
                mid = (lo + hi) / 2
            else:  # one bound or none: a value just inside it
                mid = lo + 1 if lo is not None else hi - 1 if hi is not None else 1.0
            out[f["name"]] = int(round(mid)) if f.get("integer") else float(mid)
    return out


def value_cases(features: list[dict[str, Any]]) -> list[ValueCase]:
    """Every rule of every feature, each in a case of its own."""
    cases = [ValueCase("valid", {})]
    for f in features:
        n = f["name"]
        for kind, value in (("null", None), ("nan", math.nan), ("absent", ABSENT)):
            if f.get("optional"):
                cases.append(ValueCase(f"{n}-{kind}-optional", {n: value}))
            else:
                cases.append(ValueCase(f"{n}-{kind}", {n: value}, n, "required"))
        if f["type"] == "categorical":
            cases += [
                ValueCase(f"{n}-unknown-category", {n: "not-a-category"}, n, "category"),
                ValueCase(f"{n}-code-not-text", {n: 0}, n, "category"),
                ValueCase(f"{n}-bool", {n: True}, n, "category"),
            ]
            continue
        lo, hi = f.get("min"), f.get("max")
        rng = "range" if lo is not None and hi is not None else "at_least" if lo is not None else "at_most"
        if lo is None and hi is None:
            rng = "finite"
        cases += [
            ValueCase(f"{n}-text-number", {n: "86"}, n, "number"),
            ValueCase(f"{n}-bool", {n: True}, n, "number"),
            ValueCase(f"{n}-infinity", {n: math.inf}, n, rng),
            ValueCase(f"{n}-minus-infinity", {n: -math.inf}, n, rng),
        ]
        if lo is not None:
            cases.append(ValueCase(f"{n}-below-min", {n: lo - 1}, n, rng))
            cases.append(ValueCase(f"{n}-at-min", {n: int(lo) if f.get("integer") else lo}))
        if hi is not None:
            cases.append(ValueCase(f"{n}-above-max", {n: hi + 1}, n, rng))
        if f.get("integer"):
            base = int(lo if lo is not None else 0)
            cases.append(ValueCase(f"{n}-fraction", {n: base + 0.5}, n, "whole"))
            cases.append(ValueCase(f"{n}-whole-as-float", {n: float(base + 1)}))
    return cases


TRANSPORT_CASES = [
    TransportCase("json", "application/json", status=200),
    TransportCase("json-charset-utf8", "application/json; charset=utf-8", status=200),
    TransportCase("json-charset-upper", "Application/JSON; Charset=UTF-8", status=200),
    TransportCase("charset-latin1", "application/json; charset=latin-1", status=415),
    TransportCase("unknown-parameter", "application/json; format=pandas", status=415),
    TransportCase("no-content-type", None, status=415),
    TransportCase("text-plain", "text/plain", status=415),
    TransportCase("utf16-body", "application/json", "utf-16", status=400),
    TransportCase("utf32-body", "application/json", "utf-32", status=400),
]
