"""Launch the MLflow tracking server the way Render runs it (``python -m deploy.mlflow_server``).

Reads the environment, builds an ``mlflow server`` command line and replaces this process with it:

- ``DATABASE_URL``: backend and registry store. Render hands out ``postgres://``/``postgresql://``;
  both are rewritten to ``postgresql+psycopg2://``. Unset: ``sqlite:///mlflow.db``.
- ``PORT``: port to bind on 0.0.0.0 (Render sets it; default 5000). ``HOST`` overrides the address (the local
  stack binds 127.0.0.1 so a laptop does not offer an open registry to its network).
- ``MLFLOW_ARTIFACTS_DESTINATION``: where proxied artifacts are stored (default ``./mlruns``).
  On Render this is a folder on the service's persistent disk.
- ``MLFLOW_ALLOWED_HOSTS``: Host headers MLflow accepts. MLflow 3.5+ answers 403 to any other
  Host header except on ``/health``, so a health check passes while the UI and the REST API
  are unusable. Default: localhost and 127.0.0.1 (any port), ``$RENDER_EXTERNAL_HOSTNAME``
  (public URL) and ``$RENDER_SERVICE_NAME`` with and without ``:$PORT`` plus the
  ``<name>-<4-char hash>:<port>`` form of Render's internal hostnames (private network).
- ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION``: default ``false`` here (MLflow's default starts seven extra
  worker processes for GenAI jobs).
- ``MLFLOW_CORS_ALLOWED_ORIGINS``: origins allowed to send state-changing API requests.
  Default: ``https://$RENDER_EXTERNAL_HOSTNAME`` when set, so the UI's own POSTs are accepted.
- ``MLFLOW_AUTH_ADMIN_PASSWORD``: when set, the server runs MLflow's basic-auth app
  (``--app-name basic-auth``): every request needs a user, ``default_permission = NO_PERMISSIONS``, and the
  user store lives in the same database as the registry. The launcher writes the auth config file
  (``MLFLOW_AUTH_CONFIG_PATH``, default a private temporary file) and, once the server answers, creates the
  service users idempotently (``deploy.users``). Unset (a laptop): no authentication, and the launcher refuses
  to bind anything but loopback (``HOST=127.0.0.1``), so an open registry is never offered to a network.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from common.backend import normalize_database_url, redact

DEFAULT_PORT = 5000
DEFAULT_ARTIFACTS_DESTINATION = "./mlruns"
SQLITE_FALLBACK = "sqlite:///mlflow.db"


def backend_store_uri(env: Mapping[str, str]) -> str:
    url = env.get("DATABASE_URL", "").strip()
    return normalize_database_url(url) if url else SQLITE_FALLBACK


def port(env: Mapping[str, str]) -> int:
    return int(env.get("PORT") or DEFAULT_PORT)


def allowed_hosts(env: Mapping[str, str]) -> str:
    if env.get("MLFLOW_ALLOWED_HOSTS"):
        return env["MLFLOW_ALLOWED_HOSTS"]
    # MLflow compares the Host header exactly (fnmatch when the entry has '*'), port included.
    hosts = ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"]
    if external := env.get("RENDER_EXTERNAL_HOSTNAME"):
        hosts.append(external)
    if internal := env.get("RENDER_SERVICE_NAME"):
        hosts += [internal, f"{internal}:{port(env)}"]
        # Render's internal hostname is usually "<service-name>-<4-char hash>" (e.g. "elastic-qeqj").
        # The character class keeps dots out, so no public domain can match this pattern.
        hosts.append(f"{internal}-{'[a-z0-9]' * 4}:*")
    return ",".join(hosts)


def cors_allowed_origins(env: Mapping[str, str]) -> str:
    if env.get("MLFLOW_CORS_ALLOWED_ORIGINS"):
        return env["MLFLOW_CORS_ALLOWED_ORIGINS"]
    external = env.get("RENDER_EXTERNAL_HOSTNAME")
    return f"https://{external}" if external else ""


def auth_enabled(env: Mapping[str, str]) -> bool:
    return bool(env.get("MLFLOW_AUTH_ADMIN_PASSWORD"))


def auth_config_text(env: Mapping[str, str]) -> str:
    """MLflow's basic-auth ini. The admin password is NOT written: MLflow reads MLFLOW_AUTH_ADMIN_PASSWORD
    from the environment itself, so the file holds only the database URL."""
    database_uri = backend_store_uri(env).replace("%", "%%")  # configparser interpolation
    admin = env.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
    return (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {admin}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # PBKDF2 on every request costs tens of ms; cache a verified credential briefly (one worker, so a
        # password change made through the API takes effect at once; only out-of-band changes wait).
        "auth_cache_ttl_seconds = 60\n"
    )


def write_auth_config(env: Mapping[str, str]) -> Path:
    """Write the ini (mode 0600: it holds the database URL) and return its path."""
    path = Path(env.get("MLFLOW_AUTH_CONFIG_PATH") or Path(tempfile.mkdtemp(prefix="mlflow-auth-")) / "auth.ini")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(auth_config_text(env))
    return path


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure_problem(env: Mapping[str, str]) -> str | None:
    """Why this environment must not start (an unauthenticated server reachable from a network), or None."""
    host = env.get("HOST") or "0.0.0.0"
    if auth_enabled(env) or host in LOOPBACK_HOSTS:
        return None
    return (
        f"refusing to serve the registry without authentication on {host}: anyone reaching it could replace "
        "models. Set MLFLOW_AUTH_ADMIN_PASSWORD (render.yaml generates it) or bind HOST=127.0.0.1."
    )


def build_command(env: Mapping[str, str]) -> list[str]:
    """The ``mlflow server`` argv for this environment (pure: reads nothing but ``env``)."""
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri(env),
        "--artifacts-destination", env.get("MLFLOW_ARTIFACTS_DESTINATION") or DEFAULT_ARTIFACTS_DESTINATION,
        "--serve-artifacts",
        "--host", env.get("HOST") or "0.0.0.0",
        "--port", str(port(env)),
        "--allowed-hosts", allowed_hosts(env),
        "--workers", "1",
    ]  # fmt: skip
    if origins := cors_allowed_origins(env):
        command += ["--cors-allowed-origins", origins]
    if auth_enabled(env):
        command += ["--app-name", "basic-auth"]
    return command


def main() -> None:
    # MLflow 3.x starts a job runner with seven huey consumer processes (GenAI jobs this platform does not
    # use): about 1.3 GB more PSS, far past a 512 MB instance. Off unless explicitly enabled.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if problem := exposure_problem(os.environ):
        print(f"deploy.mlflow_server: {problem}", file=sys.stderr, flush=True)
        sys.exit(2)
    if auth_enabled(os.environ):
        os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_config(os.environ))
        from deploy import users

        # A short-lived process creates the service users once the server answers; this process becomes
        # the server itself (exec), so nothing of the launcher stays in memory.
        users.provision_in_background(os.environ, f"http://127.0.0.1:{port(os.environ)}", os.getpid())
    command = build_command(os.environ)
    shown = [redact(arg) if "://" in arg else arg for arg in command]
    print("deploy.mlflow_server: exec", " ".join(shown), file=sys.stderr, flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
