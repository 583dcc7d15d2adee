"""Browser-facing defaults for every response of the API.

- CORS: only the origins in CORS_ALLOWED_ORIGINS (comma-separated, e.g. ``https://clinic.example.org``) may call
  the API from a browser page, through Starlette's CORSMiddleware. Empty (the default) adds no CORS headers at
  all, so browsers keep other sites from reading any answer. ``*`` is refused: the allow-list must be explicit.
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY`` everywhere.
- ``Content-Security-Policy``: JSON answers get ``default-src 'none'; frame-ancestors 'none'``; /docs gets a
  policy that allows exactly its own inline script and style (by hash) and fetches to the API itself.
- ``Cache-Control: no-store`` on the routes that carry patient data (/invocations and /predict), whatever the
  status, so neither a browser nor a proxy keeps a copy.
- ``Strict-Transport-Security`` when the request came over HTTPS: directly, or through a proxy that says so in
  ``X-Forwarded-Proto`` (Render's). Over plain HTTP browsers ignore the header anyway, so trusting the proxy
  header cannot be abused to pin a site that is not HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.middleware.cors import CORSMiddleware

from serving.settings import SettingsError

PATIENT_DATA_ROUTES = frozenset({"/invocations", "/predict"})
HSTS = b"max-age=31536000; includeSubDomains"
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")


def _inline_hashes(html: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(b.encode("utf-8")).digest()).decode() + "'" for b in blocks
    )


def docs_policy(html: str) -> bytes:
    """A CSP for the /docs page that allows its own inline script and style only (hashes of the shipped file)."""
    return (
        f"default-src 'none'; script-src {_inline_hashes(html, 'script')}; style-src {_inline_hashes(html, 'style')}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ).encode()


API_POLICY = b"default-src 'none'; frame-ancestors 'none'"
DOCS_POLICY = docs_policy((Path(__file__).with_name("docs.html")).read_text(encoding="utf-8"))
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def _headers(path: str, https: bool) -> list[tuple[bytes, bytes]]:
    out = [*COMMON, (b"content-security-policy", DOCS_POLICY if path == "/docs" else API_POLICY)]
    if path in PATIENT_DATA_ROUTES:
        out.append((b"cache-control", b"no-store"))
    if https:
        out.append((b"strict-transport-security", HSTS))
    return out


# Built once: the headers depend only on the route kind and the scheme.
_HEADERS_PATHS = PATIENT_DATA_ROUTES | {"/docs"}
_HEADERS = {(p, https): _headers(p, https) for p in (*_HEADERS_PATHS, "") for https in (False, True)}


def _https(scope: Mapping[str, Any]) -> bool:
    if scope.get("scheme") == "https":
        return True
    for name, value in scope.get("headers") or ():
        if name == b"x-forwarded-proto":
            return value.split(b",")[0].strip().lower() == b"https"
    return False


class SecurityHeadersMiddleware:
    """Pure ASGI: adds the headers to the response start message, no body buffering."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        extra = _HEADERS[(path if path in _HEADERS_PATHS else "", _https(scope))]

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                names = {n for n, _ in extra}  # ours win over a handler's own values
                headers = [(n, v) for n, v in message.get("headers", []) if n.lower() not in names]
                message["headers"] = headers + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


def allowed_origins(env: Mapping[str, str]) -> list[str]:
    origins = [o.strip().rstrip("/") for o in (env.get("CORS_ALLOWED_ORIGINS") or "").split(",") if o.strip()]
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise SettingsError(
                "CORS_ALLOWED_ORIGINS must be a comma-separated list of origins like https://clinic.example.org "
                "(scheme and host, optional port, no path, no '*')"
            )
    return origins


def install(app: Any, env: Mapping[str, str]) -> None:
    """Add CORS (only with an allow-list) and the security headers as the outermost middleware."""
    origins = allowed_origins(env)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            allow_credentials=False,  # bearer credentials, never cookies
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)
