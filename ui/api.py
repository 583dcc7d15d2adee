"""HTTP client for the serving API (routes and JSON shapes from the project contract).

Every failure becomes an ``ApiError`` subclass so pages can show a banner instead of a traceback.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Any

import requests
import streamlit as st

from ui.settings import load

CONNECT_TIMEOUT_S = 3.0  # a down API (refused/unroutable) must not freeze the page
_TTL_S = load().cache_ttl_s


class ApiError(Exception):
    """Base class: anything that stops us from getting an answer from the API."""


class ApiUnavailable(ApiError):
    """Cannot connect or timed out (status None), or an HTTP error status (503: no model loaded)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ApiBadResponse(ApiError):
    """The API answered with something outside the contract."""


class ApiValidationError(ApiError):
    """422 from /predict: ``errors`` is the contract's list of {row, field, rule, message}."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


USER_HEADER = "X-Inference-User"
MAX_USER_CHARS = 64  # the API's bound (serving/auth.py): a longer name would be ignored there


def user_token(user: str | None) -> str | None:
    """The logged-in user as the API accepts it in X-Inference-User: ASCII letters, digits and . _ @ + -, at
    most 64 characters (accents dropped, anything else becomes ``_``); None when nothing is left."""
    if not user:
        return None
    ascii_ = unicodedata.normalize("NFKD", user).encode("ascii", "ignore").decode("ascii")
    token = re.sub(r"[^A-Za-z0-9._@+-]", "_", ascii_.strip())[:MAX_USER_CHARS]
    return token or None


def _auth() -> dict[str, str]:
    """The app's own API credential (API_SERVICE_KEY, shared with the API through a Render env group), read on
    each call so a rotated secret is picked up on the next request, and the logged-in clinician, whom the API
    records as the caller (``app:<user>``; it trusts the header only from this credential). Unset locally,
    where the API runs with auth off on loopback."""
    from ui.login import current_user

    key = os.environ.get("API_SERVICE_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    user = user_token(current_user())
    if user:
        headers[USER_HEADER] = user
    return headers


def _request(method: str, url: str, timeout: float, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    headers = {**(headers or {}), **_auth()}
    try:
        return requests.request(method, url, timeout=(CONNECT_TIMEOUT_S, timeout), headers=headers, **kwargs)
    except requests.RequestException as exc:
        # Only the exception class: a message could carry request details we do not want in the UI.
        raise ApiUnavailable(f"{type(exc).__name__} calling {url}") from exc


def _json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise ApiBadResponse(f"non-JSON answer ({resp.status_code}) from {resp.url}") from exc


def health(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET /health, uncached: the Model page must say what the API serves *now*.

    503 with status "down" (no model loaded) is returned, not raised: it is a valid, displayable state.
    """
    resp = _request("GET", f"{base_url}/health", timeout)
    if resp.status_code not in (200, 503):
        raise ApiUnavailable(f"/health answered {resp.status_code}", resp.status_code)
    body = _json(resp)
    if not isinstance(body, dict) or "status" not in body:
        raise ApiBadResponse("/health answer without status")
    return body


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def model_info(base_url: str) -> dict[str, Any]:
    """GET /model/info: the served model's feature spec, bands and metrics (cached; errors are not cached)."""
    resp = _request("GET", f"{base_url}/model/info", 10.0)
    if resp.status_code != 200:
        raise ApiUnavailable(f"/model/info answered {resp.status_code}", resp.status_code)
    body = _json(resp)
    if not isinstance(body, dict) or not isinstance(body.get("features"), list):
        raise ApiBadResponse("/model/info answer without features")
    return body


def feedback(base_url: str, outcomes: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """POST /feedback with a list of outcomes (one transaction on the API); returns its counts ``stored``,
    ``not_found``, ``invalid`` and the ``problems`` by item index. 403: the app's credential lacks the
    ``feedback`` scope; 409: the API's inference log is off."""
    resp = _request("POST", f"{base_url}/feedback", timeout, json=outcomes)
    if resp.status_code != 200:
        raise ApiUnavailable(f"/feedback answered {resp.status_code}", resp.status_code)
    body = _json(resp)
    if not isinstance(body, dict) or not isinstance(body.get("problems"), list) or "stored" not in body:
        raise ApiBadResponse("/feedback answer without counts")
    return body


def predict(
    base_url: str,
    patients: list[dict[str, Any]],
    lang: str,
    timeout: float,
    contributions: bool = True,
    session: requests.Session | None = None,
    interval: bool = False,
) -> dict[str, Any]:
    """POST /predict with a list of patients; returns the 200 body, raises ApiValidationError on 422."""
    params = {"contributions": "true" if contributions else "false", "lang": lang}
    if interval:  # 90 % bootstrap interval per patient (probability_low / probability_high)
        params["interval"] = "true"
    url = f"{base_url}/predict"
    # Tells the API's inference log which page scored the rows (batch pages pass a session, the form does not).
    headers = {"X-Inference-Source": "app-individual" if session is None else "app-batch", **_auth()}
    if session is None:
        resp = _request("POST", url, timeout, params=params, json=patients, headers=headers)
    else:  # batch scoring reuses one connection across chunks
        try:
            timeouts = (CONNECT_TIMEOUT_S, timeout)
            resp = session.post(url, params=params, json=patients, headers=headers, timeout=timeouts)
        except requests.RequestException as exc:
            raise ApiUnavailable(f"{type(exc).__name__} calling {url}") from exc
    if resp.status_code == 422:
        body = _json(resp)
        errors = body.get("errors") if isinstance(body, dict) else None
        if not isinstance(errors, list):
            raise ApiBadResponse("422 without an errors list")
        raise ApiValidationError(errors)
    if resp.status_code != 200:
        raise ApiUnavailable(f"/predict answered {resp.status_code}", resp.status_code)
    body = _json(resp)
    preds = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(preds, list) or len(preds) != len(patients):
        raise ApiBadResponse("/predict answer without one prediction per patient")
    return body
