"""API authentication, scopes, rate limits and browser headers, in-process (FastAPI TestClient) against a model
that the real pipeline trained and registered into a throwaway SQLite registry (the session's, tests/unit/conftest.py),
with the key database in SQLite."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving import keys
from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import Settings
from tests.conftest import EXAMPLE_PATIENT

JWT_SECRET = secrets.token_urlsafe(32)
SERVICE_KEY = secrets.token_urlsafe(32)


@dataclass
class Registry:
    settings: Settings
    store: ModelStore
    tmp: Path


@pytest.fixture(scope="module")
def registry(registry_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("auth-registry")
    settings = Settings.from_env(
        {
            "MLFLOW_TRACKING_URI": registry_uri,
            "MODEL_CACHE_DIR": str(tmp / "cache"),
            "HOST": "127.0.0.1",
            "RELOAD_INTERVAL_S": "0",
            "REGISTRY_TIMEOUT_S": "120",  # the first in-process registry call imports MLflow's store
        }
    )
    store = ModelStore(settings)
    create_app(settings, store, {"API_AUTH": "off"})  # registers the preparation step before the first load
    store.load_initial()
    assert store.current is not None
    yield Registry(settings, store, tmp)


def auth_env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "APP_DATABASE_URL": f"sqlite:///{tmp / 'keys.db'}",
        "JWT_SECRET_KEY": JWT_SECRET,
        "API_SERVICE_KEY": SERVICE_KEY,
        "RATE_LIMIT_AUTH_FAILURES": "100000/minute",  # the matrix makes many refusals from one address
        **extra,
    }


def client_for(registry: Registry, address: str = "203.0.113.7", **extra: str) -> TestClient:
    app = create_app(registry.settings, registry.store, auth_env(registry.tmp, **extra))
    return TestClient(app, client=(address, 40000))


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def new_key(registry: Registry, scopes: str, days: int | None = None) -> tuple[str, str]:
    name = f"k{secrets.token_hex(6)}"
    return name, keys.KeyStore(auth_env(registry.tmp)["APP_DATABASE_URL"]).create(name, scopes.split(","), days)


# Every protected route, its scope, and a request that succeeds with a credential that has that scope.
ROUTES = {
    "/invocations": ("predict", "POST", {"json": {"dataframe_records": [EXAMPLE_PATIENT]}}),
    "/predict": ("predict", "POST", {"json": EXAMPLE_PATIENT}),
    "/model/info": ("info", "GET", {}),
    "/metrics": ("metrics", "GET", {}),
    "/docs": ("info", "GET", {}),
    "/openapi.json": ("info", "GET", {}),
    # an outcome for a prediction nobody logged: the envelope is accepted (200) and the item reported not found
    "/feedback": ("feedback", "POST", {"json": [{"request_id": "not-logged", "diabetes": True, "test": "hba1c",
                                                 "test_date": "2026-01-15"}]}),  # fmt: skip
}
OTHER_SCOPE = {"predict": "info", "info": "metrics", "metrics": "predict", "feedback": "predict"}


@pytest.fixture(scope="module")
def credentials(registry: Registry) -> dict[str, dict[str, str]]:
    """For each scope: a good key, a key with another scope, a revoked key and an expired JWT."""
    store = keys.KeyStore(auth_env(registry.tmp)["APP_DATABASE_URL"])
    out = {}
    for scope, other in OTHER_SCOPE.items():
        revoked_name, revoked = new_key(registry, scope)
        assert store.revoke(revoked_name)
        expired = keys.make_token(JWT_SECRET, "old-client", [scope], days=1, now=time.time() - 2 * 86400)
        out[scope] = {
            "good": new_key(registry, scope)[1],
            "wrong scope": new_key(registry, other)[1],
            "revoked": revoked,
            "expired JWT": expired,
        }
    return out


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_every_protected_route_needs_a_valid_credential_with_its_scope(
    registry: Registry, credentials: dict, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    scope, method, kwargs = ROUTES[path]
    creds = credentials[scope]
    client = client_for(registry)
    cases = {
        "no credential": ({}, 401),
        "bad key": (bearer("dk_" + secrets.token_urlsafe(32)), 401),
        "revoked key": (bearer(creds["revoked"]), 401),
        "expired JWT": (bearer(creds["expired JWT"]), 401),
        "wrong scope": (bearer(creds["wrong scope"]), 403),
        "good key": (bearer(creds["good"]), 200),
    }
    caplog.set_level(logging.INFO, logger="serving.auth")
    for case, (headers, expected) in cases.items():
        r = client.request(method, path, headers={**headers, "X-Request-ID": f"req-{case.replace(' ', '-')}"}, **kwargs)
        assert r.status_code == expected, (case, r.status_code, r.text[:300])
        if expected != 200:
            doc = r.json()
            assert doc["request_id"] == r.headers["x-request-id"] != f"req-{case.replace(' ', '-')}", case
            assert f"request_id={doc['request_id']}" in caplog.text, case  # the refusal's log line names it
            assert doc["error_code"] == ("UNAUTHENTICATED" if expected == 401 else "PERMISSION_DENIED")
            assert ("www-authenticate" in r.headers) == (expected == 401)
    # Refusals are logged with their reason and never with the credential.
    text = caplog.text
    for reason in ("missing", "unknown", "revoked", "expired", "scope"):
        assert f"reason={reason}" in text
    for credential in creds.values():
        assert credential not in text


def test_service_key_and_signed_tokens(registry: Registry) -> None:
    client = client_for(registry)
    assert client.post("/predict", json=EXAMPLE_PATIENT, headers=bearer(SERVICE_KEY)).status_code == 200
    assert client.get("/model/info", headers=bearer(SERVICE_KEY)).status_code == 200
    assert client.get("/metrics", headers=bearer(SERVICE_KEY)).status_code == 403  # default scopes: predict,info

    token = keys.make_token(JWT_SECRET, "his-system", ["predict"], days=1)
    assert client.post("/predict", json=EXAMPLE_PATIENT, headers=bearer(token)).status_code == 200
    assert client.get("/model/info", headers=bearer(token)).status_code == 403
    forged = keys.make_token(secrets.token_urlsafe(32), "his-system", ["predict"], days=1)
    assert client.post("/predict", json=EXAMPLE_PATIENT, headers=bearer(forged)).status_code == 401

    import jwt

    no_exp = jwt.encode(
        {"sub": "x", "scope": "predict", "iat": int(time.time()), "iss": "diabetes-api", "aud": "diabetes-api"},
        JWT_SECRET,
        algorithm="HS256",
    )
    assert client.post("/predict", json=EXAMPLE_PATIENT, headers=bearer(no_exp)).status_code == 401
    assert client.get("/model/info", headers={"Authorization": f"Basic {SERVICE_KEY}"}).status_code == 401


def test_open_routes_need_nothing_and_reveal_no_secret(registry: Registry) -> None:
    client = client_for(registry)
    for path in ("/health", "/ping", "/version"):
        r = client.get(path)
        assert r.status_code == 200, path
        for secret in (JWT_SECRET, SERVICE_KEY, str(registry.tmp / "keys.db")):
            assert secret not in r.text and secret not in str(r.headers)


def test_failed_attempts_are_counted_in_metrics(registry: Registry) -> None:
    client = client_for(registry)
    _, metrics_key = new_key(registry, "metrics")

    def failures(reason: str) -> float:
        text = client.get("/metrics", headers=bearer(metrics_key)).text
        line = [ln for ln in text.splitlines() if ln.startswith(f'serving_auth_failures_total{{reason="{reason}"}}')]
        return float(line[0].split()[-1]) if line else 0.0

    before = failures("unknown"), failures("missing")
    client.get("/model/info", headers=bearer("dk_" + secrets.token_urlsafe(32)))
    client.get("/model/info")
    client.get("/model/info")
    assert (failures("unknown"), failures("missing")) == (before[0] + 1, before[1] + 2)


def test_revocation_takes_effect_within_the_cache_time(registry: Registry) -> None:
    client = client_for(registry, AUTH_CACHE_TTL_S="1")
    name, key = new_key(registry, "info")
    assert client.get("/model/info", headers=bearer(key)).status_code == 200
    assert keys.KeyStore(auth_env(registry.tmp)["APP_DATABASE_URL"]).revoke(name)
    deadline = time.monotonic() + 1.5  # AUTH_CACHE_TTL_S plus slack
    while client.get("/model/info", headers=bearer(key)).status_code == 200:
        assert time.monotonic() < deadline, "a revoked key was still accepted after the cache time"
        time.sleep(0.05)
    assert client.get("/model/info", headers=bearer(key)).status_code == 401


def test_expired_key_is_refused_and_last_use_is_recorded_off_the_request_path(registry: Registry) -> None:
    import sqlalchemy as sa

    store = keys.KeyStore(auth_env(registry.tmp)["APP_DATABASE_URL"])
    name, key = new_key(registry, "info", days=1)
    client = client_for(registry)
    assert client.get("/model/info", headers=bearer(key)).status_code == 200
    assert next(r for r in store.records() if r.name == name).last_used_at is None  # not written per request
    client.app.state.guard.flush_now()
    assert next(r for r in store.records() if r.name == name).last_used_at is not None

    with store.engine.begin() as conn:  # the key's expiry passes
        conn.execute(keys.api_keys.update().where(keys.api_keys.c.name == name).values(expires_at=sa.func.now()))
    fresh = client_for(registry)  # another worker: nothing cached
    assert fresh.get("/model/info", headers=bearer(key)).status_code == 401
    assert next(r for r in store.records() if r.name == name).status() == "expired"


def test_rate_limit_per_key_answers_429_with_retry_after(registry: Registry) -> None:
    client = client_for(registry, RATE_LIMIT_PER_KEY="3/minute")
    _, key = new_key(registry, "predict")
    codes = [client.post("/predict", json=EXAMPLE_PATIENT, headers=bearer(key)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = client.post("/predict", json=EXAMPLE_PATIENT, headers=bearer(key))
    assert r.status_code == 429 and r.json()["error_code"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # Another key is counted on its own.
    _, other = new_key(registry, "predict")
    assert client.post("/predict", json=EXAMPLE_PATIENT, headers=bearer(other)).status_code == 200


def test_key_guessing_is_throttled_per_address_before_the_lookup(registry: Registry) -> None:
    _, known = new_key(registry, "info")
    _, unseen = new_key(registry, "info")
    app = create_app(registry.settings, registry.store, auth_env(registry.tmp, RATE_LIMIT_AUTH_FAILURES="3/minute"))
    guesser = TestClient(app, client=("198.51.100.9", 40000))
    neighbour = TestClient(app, client=("198.51.100.10", 40000))
    assert guesser.get("/model/info", headers=bearer(known)).status_code == 200  # verified, now cached
    guesses = [bearer("dk_" + secrets.token_urlsafe(32)) for _ in range(4)]
    codes = [guesser.get("/model/info", headers=guess).status_code for guess in guesses]
    assert codes == [401, 401, 401, 429]
    r = guesser.get("/model/info", headers=bearer(unseen))  # a real key is not even looked up from there now
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert guesser.get("/model/info", headers=bearer(known)).status_code == 200  # a verified client keeps working
    assert neighbour.get("/model/info", headers=bearer(unseen)).status_code == 200  # other addresses unaffected


def test_security_headers(registry: Registry) -> None:
    client = client_for(registry)
    _, key = new_key(registry, "predict,info")
    r = client.post("/predict", json=EXAMPLE_PATIENT, headers=bearer(key))
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "strict-transport-security" not in r.headers  # plain HTTP
    bad = client.post("/invocations", content=b"{", headers={**bearer(key), "Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.headers["cache-control"] == "no-store"
    assert "no-store" not in client.get("/model/info", headers=bearer(key)).headers.get("cache-control", "")

    docs = client.get("/docs", headers=bearer(key))
    csp = docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "'sha256-" in csp and "unsafe-inline" not in csp
    assert docs.headers["x-frame-options"] == "DENY"

    proxied = client.get("/health", headers={"X-Forwarded-Proto": "https"})
    assert proxied.headers["strict-transport-security"].startswith("max-age=")
    https = TestClient(client.app, base_url="https://testserver")
    assert "strict-transport-security" in https.get("/health").headers


def test_cors_is_an_explicit_allow_list(registry: Registry) -> None:
    _, key = new_key(registry, "info")
    default = client_for(registry)
    r = default.get("/model/info", headers={**bearer(key), "Origin": "https://clinic.example.org"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers

    client = client_for(registry, CORS_ALLOWED_ORIGINS="https://clinic.example.org")
    preflight = {"Origin": "https://clinic.example.org", "Access-Control-Request-Method": "POST"}
    preflight["Access-Control-Request-Headers"] = "authorization,content-type"
    ok = client.options("/predict", headers=preflight)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://clinic.example.org"
    evil = client.options("/predict", headers={**preflight, "Origin": "https://evil.example"})
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    r = client.get("/model/info", headers={**bearer(key), "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_auth_off_only_on_loopback(registry: Registry) -> None:
    from serving.auth import AuthConfig
    from serving.settings import SettingsError

    for host in ("0.0.0.0", "10.0.0.5", "::", "api.example.org"):
        with pytest.raises(SettingsError, match="API_AUTH=off is only allowed"):
            AuthConfig.from_env(host, {"API_AUTH": "off"})
    for host in ("127.0.0.1", "::1", "localhost"):
        assert AuthConfig.from_env(host, {"API_AUTH": "off"}).enabled is False
    assert AuthConfig.from_env("0.0.0.0", {}).enabled is True  # on unless said otherwise
    with pytest.raises(SettingsError, match="CORS_ALLOWED_ORIGINS"):
        client_for(registry, CORS_ALLOWED_ORIGINS="*")
    with pytest.raises(SettingsError, match="JWT_SECRET_KEY"):
        client_for(registry, JWT_SECRET_KEY="short")

    local = TestClient(create_app(registry.settings, registry.store, {"API_AUTH": "off"}))
    assert local.post("/predict", json=EXAMPLE_PATIENT).status_code == 200
