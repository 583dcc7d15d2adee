"""Who is calling: ``Authorization: Bearer <credential>`` → a Principal (name + scopes), with rate limits.

Credentials accepted, checked in this order:
- the service key (API_SERVICE_KEY): the Streamlit app's own key, shared with it through a Render env group;
  scopes API_SERVICE_SCOPES (default predict,info,feedback);
- API keys made by ``python -m serving.keys create`` (``dk_...``), looked up by SHA-256 in the key database;
- HS256 JWTs signed with JWT_SECRET_KEY (``python -m serving.keys token``): ``exp``, ``iat``, ``sub``, issuer and
  audience ``diabetes-api`` required, scopes space-separated in the ``scope`` claim.

Hot path: a key found in the database is cached in the process for AUTH_CACHE_TTL_S (default 30 s), so a request
costs a SHA-256 and a dictionary look-up, never a database round trip. That is also the bound on revocation: a
revoked (or newly expired) key is refused by every worker at most AUTH_CACHE_TTL_S after ``revoke``. Last use is
recorded in memory and written to the database in a batch at most every AUTH_LAST_USED_FLUSH_S (default 60 s),
from a background thread. A credential not in the cache first passes the per-address failure limit (see
serving.ratelimit), so guessing keys is throttled before any look-up; a cached valid credential skips that check,
so clients behind a shared proxy address keep working while a guesser there is throttled.

API_AUTH=off (no credential needed, every scope) is accepted only when HOST is a loopback address; otherwise the
service refuses to start. Errors are JSON with a request id: 401 UNAUTHENTICATED (no, bad, revoked or expired
credential; ``WWW-Authenticate: Bearer``), 403 PERMISSION_DENIED (scope missing), 429 RESOURCE_EXHAUSTED
(``Retry-After``), 503 TEMPORARILY_UNAVAILABLE (key database unreachable). Refusals are counted in /metrics
(``serving_auth_failures_total{reason}``) and logged with the reason, never with the credential.

Integration: ``install(app, host)`` once; then ``Depends(require("predict"))`` on FastAPI routes, or
``await authorize(request, "predict")`` first thing in a LeanRoute (serving/routes.py). The principal is in
``request.state.principal`` and the caller's name for the logs in ``request.state.caller`` (see ``caller_name``).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response

from serving import keys
from serving.deps import request_id
from serving.ratelimit import RateLimitConfig, RateLimiter
from serving.settings import SettingsError

log = logging.getLogger("serving.auth")

FAILURES = Counter("serving_auth_failures_total", "Refused credentials by reason", ["reason"])
DEFAULT_SERVICE_SCOPES = ("predict", "info", "feedback")  # feedback: the app sends confirmed outcomes
MAX_CREDENTIAL_CHARS = 4096
CACHE_SIZE = 4096  # credentials remembered per worker
# The app's logged-in user, sent by the app with its own credential (ui/api.py). A plain token so it cannot
# smuggle anything into logs: letters, digits and . _ @ + - (user names, e-mail addresses), at most 64.
USER_HEADER = b"x-inference-user"
_APP_USER = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
# Credentials allowed to speak for someone else (the app's user, the page that scored): the app's service key,
# and everyone on the loopback-only API_AUTH=off stack. Any other key's claim is ignored.
TRUSTED_KINDS = ("service", "local")


@dataclass(frozen=True)
class Principal:
    name: str  # key name, "service", "jwt:<client>" or "local" (API_AUTH=off)
    scopes: frozenset[str]
    kind: str  # "key", "service", "jwt" or "local"


LOCAL = Principal("local", frozenset(keys.SCOPES), "local")


class AuthError(Exception):
    """A refused request; rendered by ``error_response``."""

    CODES = {
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        429: "RESOURCE_EXHAUSTED",
        503: "TEMPORARILY_UNAVAILABLE",
    }

    def __init__(self, status: int, message: str, retry_after: int | None = None, request_id: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.request_id = request_id  # the id already written to the log line, when there is one


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    try:
        value = float(env.get(key) or default)
    except ValueError:
        raise SettingsError(f"{key} must be a number") from None
    if value < 0:
        raise SettingsError(f"{key} must be >= 0")
    return value


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool
    service_key_hash: str | None
    service_scopes: frozenset[str]
    jwt_secret: str | None
    database_url: str
    cache_ttl_s: float
    last_used_flush_s: float
    proxy_hops: int
    limits: RateLimitConfig

    @classmethod
    def from_env(cls, host: str, env: Mapping[str, str] | None = None) -> AuthConfig:
        """Raises SettingsError (the service refuses to start) for API_AUTH=off on a non-loopback HOST, a short
        secret or an unknown scope."""
        env = os.environ if env is None else env
        mode = (env.get("API_AUTH") or "on").strip().lower()
        if mode not in ("on", "off"):
            raise SettingsError("API_AUTH must be on or off")
        if mode == "off" and not is_loopback(host):
            raise SettingsError(
                f"API_AUTH=off is only allowed when HOST is a loopback address (127.0.0.1, ::1); HOST is {host}"
            )
        service_key = env.get("API_SERVICE_KEY") or ""
        jwt_secret = env.get("JWT_SECRET_KEY") or ""
        for name, value in (("API_SERVICE_KEY", service_key), ("JWT_SECRET_KEY", jwt_secret)):
            if value and len(value) < keys.MIN_SECRET_CHARS:
                raise SettingsError(f"{name} must be at least {keys.MIN_SECRET_CHARS} characters long")
        try:
            service_scopes = keys.parse_scopes(env.get("API_SERVICE_SCOPES") or ",".join(DEFAULT_SERVICE_SCOPES))
        except keys.KeyStoreError as exc:
            raise SettingsError(f"API_SERVICE_SCOPES: {exc}") from None
        hops = env.get("TRUSTED_PROXY_HOPS") or "0"
        if not hops.isdigit():
            raise SettingsError("TRUSTED_PROXY_HOPS must be a whole number >= 0")
        return cls(
            enabled=mode == "on",
            service_key_hash=keys.hash_key(service_key) if service_key else None,
            service_scopes=frozenset(service_scopes),
            jwt_secret=jwt_secret or None,
            database_url=keys.database_url(env),
            cache_ttl_s=_float(env, "AUTH_CACHE_TTL_S", 30.0),
            last_used_flush_s=_float(env, "AUTH_LAST_USED_FLUSH_S", 60.0),
            proxy_hops=int(hops),
            limits=RateLimitConfig.from_env(env),
        )


@dataclass(frozen=True)
class _Entry:
    """What the database (or a verified JWT) said about one credential hash, cached for AUTH_CACHE_TTL_S."""

    principal: Principal
    expires: float  # epoch seconds; inf when the key never expires
    revoked: bool
    cached_until: float  # epoch seconds: AUTH_CACHE_TTL_S after the look-up
    usable_until: float  # min(expires, cached_until), or 0 when revoked: the hot path's single comparison


def _bearer(raw_headers: list[tuple[bytes, bytes]]) -> str | None:
    # Straight from the ASGI scope (servers lower-case header names): cheaper than building a Headers object.
    for name, value in raw_headers:
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            credential = credential.strip()
            return credential if scheme.lower() == "bearer" and credential else ""
    return None


def client_address(scope: Mapping[str, Any], proxy_hops: int) -> str:
    """The peer address, or with TRUSTED_PROXY_HOPS=N the N-th address from the right of X-Forwarded-For (each
    trusted proxy appends the address it saw; entries further left are whatever the client claimed)."""
    if proxy_hops:
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                hops = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
                if len(hops) >= proxy_hops:
                    return hops[-proxy_hops]
    client = scope.get("client")
    return client[0] if client else "unknown"


class Guard:
    """Authentication, authorisation and rate limits for one app (one per worker process)."""

    def __init__(self, config: AuthConfig, store: keys.KeyStore | None = None):
        self.config = config
        self.store = store or keys.KeyStore(config.database_url)
        self.limits = RateLimiter(config.limits)
        # A plain dict (insertion-ordered, oldest evicted beyond CACHE_SIZE): the hot path is one dict look-up
        # and one float comparison, cheaper than a general TTL cache.
        self._cache: dict[str, _Entry] = {}
        self._service = (
            Principal("service", config.service_scopes, "service") if config.service_key_hash is not None else None
        )
        self._used: dict[str, float] = {}
        self._next_flush = time.monotonic() + config.last_used_flush_s
        self._flushing = threading.Lock()

    # ---- credentials ----------------------------------------------------------------------------------------
    def _known(self, credential: str) -> tuple[str, Principal | None]:
        """(hash, principal) when the credential is the service key or a cached, valid key; no I/O."""
        digest = keys.hash_key(credential)
        if self._service is not None and hmac.compare_digest(digest, self.config.service_key_hash or ""):
            return digest, self._service
        entry = self._cache.get(digest)
        if entry is not None and time.time() < entry.usable_until:
            return digest, entry.principal
        return digest, None

    def _remember(self, digest: str, principal: Principal, expires: float, revoked: bool) -> _Entry:
        until = time.time() + self.config.cache_ttl_s
        entry = _Entry(principal, expires, revoked, until, 0.0 if revoked else min(expires, until))
        self._cache.pop(digest, None)
        self._cache[digest] = entry
        while len(self._cache) > CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        return entry

    async def _verify(self, credential: str, digest: str) -> tuple[Principal, str]:
        """The principal for a credential that is not known yet; raises AuthError(401, reason as message)."""
        if credential.startswith(keys.KEY_PREFIX):
            entry = self._cache.get(digest)
            if entry is None or time.time() >= entry.cached_until:
                entry = await self._lookup(digest)
            if entry.revoked:
                raise _Refused("revoked", entry.principal.name)
            if time.time() >= entry.expires:
                raise _Refused("expired", entry.principal.name)
            return entry.principal, digest
        if credential.count(".") == 2 and self.config.jwt_secret:
            principal, expires = self._verify_jwt(credential)
            self._remember(digest, principal, expires, False)
            return principal, digest
        raise _Refused("unknown")

    async def _lookup(self, digest: str) -> _Entry:
        import anyio
        import sqlalchemy as sa

        try:
            record = await anyio.to_thread.run_sync(self.store.lookup, digest)
        except sa.exc.SQLAlchemyError as exc:
            log.error("key database unreachable (%s)", type(exc).__name__)
            raise AuthError(503, "the credential store is not reachable; retry shortly") from None
        if record is None:
            raise _Refused("unknown")
        return self._remember(
            digest,
            Principal(record.name, frozenset(record.scopes), "key"),
            record.expires_at.timestamp() if record.expires_at else float("inf"),
            record.revoked_at is not None,
        )

    def _verify_jwt(self, token: str) -> tuple[Principal, float]:
        import jwt

        try:
            claims = jwt.decode(
                token,
                self.config.jwt_secret,
                algorithms=["HS256"],
                audience=keys.JWT_AUDIENCE,
                issuer=keys.JWT_ISSUER,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _Refused("expired") from None
        except jwt.InvalidTokenError:
            raise _Refused("unknown") from None
        scopes = frozenset(str(claims.get("scope", "")).split()) & frozenset(keys.SCOPES)
        return Principal(f"jwt:{claims['sub']}", scopes, "jwt"), float(claims["exp"])

    # ---- the check ----------------------------------------------------------------------------------------
    async def authorize(self, request: Request, scope: str) -> Principal:
        """The caller's principal if it may use ``scope``; raises AuthError otherwise."""
        if not self.config.enabled:
            return LOCAL
        raw = request.scope.get("headers") or []
        credential = _bearer(raw)
        digest, principal = self._known(credential) if credential else ("", None)
        if principal is None:
            address = client_address(request.scope, self.config.proxy_hops)
            wait = await self.limits.failures_exceeded(address)
            if wait is not None:
                rid = self._refuse(request, "throttled", None, address)
                raise AuthError(429, "too many failed credentials from this address; retry later", wait, rid)
            try:
                if credential is None:
                    raise _Refused("missing")
                if not credential or len(credential) > MAX_CREDENTIAL_CHARS:
                    raise _Refused("malformed")
                principal, digest = await self._verify(credential, digest)
            except _Refused as refused:
                await self.limits.record_failure(address)
                rid = self._refuse(request, refused.reason, refused.name, address)
                message = "a valid credential is required: Authorization: Bearer <key>"
                raise AuthError(401, message, request_id=rid) from None
        if scope not in principal.scopes:
            rid = self._refuse(request, "scope", principal.name, None)
            raise AuthError(403, f"this credential does not have the {scope!r} scope", request_id=rid)
        wait = await self.limits.hit_key(f"{principal.kind}:{principal.name}")
        if wait is not None:
            raise AuthError(429, "rate limit or quota of this credential exceeded; retry later", wait)
        if principal.kind == "key":
            self._record_use(digest)
        return principal

    def _refuse(self, request: Request, reason: str, name: str | None, address: str | None) -> str:
        """Count and log a refusal (never the credential); returns the request id used in the log line."""
        FAILURES.labels(reason).inc()
        rid = request_id(request)
        log.warning(
            "refused %s reason=%s principal=%s address=%s request_id=%s",
            request.scope.get("path"),
            reason,
            name or "-",
            address or "-",
            rid,
        )
        return rid

    # ---- last use, off the request path ---------------------------------------------------------------------
    def _record_use(self, digest: str) -> None:
        self._used[digest] = time.time()
        if time.monotonic() >= self._next_flush and self._flushing.acquire(blocking=False):
            self._next_flush = time.monotonic() + self.config.last_used_flush_s
            batch, self._used = self._used, {}
            threading.Thread(target=self._flush, args=(batch,), name="keys-last-used", daemon=True).start()

    def _flush(self, batch: dict[str, float]) -> None:
        try:
            self._write(batch)
        finally:
            self._flushing.release()

    def _write(self, batch: dict[str, float]) -> None:
        try:
            self.store.touch({h: datetime.fromtimestamp(t, UTC) for h, t in batch.items()})
        except Exception as exc:  # noqa: BLE001 - last use is informational; never break a worker for it
            log.warning("could not record key last use (%s)", type(exc).__name__)

    def flush_now(self) -> None:
        """Write pending last-use times now (tests, shutdown)."""
        with self._flushing:
            batch, self._used = self._used, {}
            self._write(batch)


class _Refused(Exception):
    """A credential refused with 401: the reason and, when known, the key's name, for the log line only."""

    def __init__(self, reason: str, name: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.name = name


# ---- integration: plain Starlette handlers and FastAPI dependencies -------------------------------------------
def error_response(request: Request, err: AuthError) -> Response:
    rid = err.request_id or request_id(request)
    doc = {"error_code": AuthError.CODES.get(err.status, "ERROR"), "message": err.message, "request_id": rid}
    headers = {"x-request-id": rid}
    if err.status == 401:
        headers["www-authenticate"] = "Bearer"
    if err.retry_after is not None:
        headers["retry-after"] = str(err.retry_after)
    return Response(orjson.dumps(doc), status_code=err.status, media_type="application/json", headers=headers)


def caller_name(principal: Principal, raw_headers: list[tuple[bytes, bytes]]) -> str:
    """Who called, as the inference log and the request log record it (never the credential):
    ``app:<user>`` when the app's service credential (or the loopback stack) names its logged-in user in
    ``X-Inference-User``; otherwise the principal's name — a key's name, ``service``, ``jwt:<client>`` or
    ``local``. A header from any other credential, or one outside the token rule, is ignored."""
    if principal.kind in TRUSTED_KINDS:
        for name, value in raw_headers:
            if name == USER_HEADER:
                user = value.decode("latin-1")
                if _APP_USER.fullmatch(user):
                    return f"app:{user}"
                break
    return principal.name


def caller(request: Request) -> str:
    """The caller's name set by ``authorize`` ("anonymous" on a route without authentication)."""
    return getattr(request.state, "caller", None) or "anonymous"


async def authorize(request: Request, scope: str) -> Principal:
    principal = await request.app.state.guard.authorize(request, scope)
    request.state.principal = principal
    request.state.caller = caller_name(principal, request.scope.get("headers") or [])
    return principal


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: ``Depends(require("predict"))`` (AuthError is rendered by the handler ``install``
    registers)."""

    async def dependency(request: Request) -> Principal:
        return await authorize(request, scope)

    return dependency


def install(app: Any, host: str, env: Mapping[str, str] | None = None, store: keys.KeyStore | None = None) -> Guard:
    """Attach a Guard to the app (``app.state.guard``) and render AuthError as JSON. Raises SettingsError for a
    configuration the service must refuse to start with (API_AUTH=off off loopback)."""
    guard = Guard(AuthConfig.from_env(host, env), store)
    app.state.guard = guard
    app.add_exception_handler(AuthError, error_response)
    if not guard.config.enabled:
        log.warning("API_AUTH=off: no credentials are checked (allowed only because HOST=%s is loopback)", host)
    return guard
