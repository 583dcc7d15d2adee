"""First-deploy bootstrap: train and register a version for MODEL_ALIAS once if the registry has none.

Runs before the API starts (``python -m pipeline.bootstrap && python -m serving``). Later deploys find
the champion and return at once. Two instances starting together train once: they serialise on a
Postgres advisory lock when ``DATABASE_URL`` is set, else on a file lock, and look for the champion
only once they hold it.

Credentials (MLflow server with authentication): the champion is looked up as the API's own read-only user
(``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``); training and registering use the one-shot
bootstrap user (``MLFLOW_BOOTSTRAP_USERNAME`` / ``MLFLOW_BOOTSTRAP_PASSWORD``), whose password bootstrap
replaces with a random one it throws away as soon as the champion is registered. The API process that starts
next inherits this environment, so it holds only a dead bootstrap credential.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
from mlflow import MlflowClient

from common.backend import PROJECT_ROOT, normalize_database_url, redact
from pipeline.registry import alias_version
from pipeline.settings import load_settings

log = logging.getLogger("bootstrap")
LOCK_KEY = 7_242_001  # arbitrary, fixed: the advisory-lock id shared by every instance


@contextmanager
def deploy_lock(url: str | None) -> Iterator[None]:
    """Held by one instance at a time: a Postgres advisory lock on ``url`` if given, else a file lock."""
    if url:
        import psycopg2

        conn = psycopg2.connect(normalize_database_url(url).replace("postgresql+psycopg2://", "postgresql://", 1))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            yield
        finally:
            conn.close()  # closing the session releases the lock
    else:
        with open(PROJECT_ROOT / ".bootstrap.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield


def wait_for_registry(client: MlflowClient, name: str, alias: str, timeout_s: float) -> str | None | bool:
    """The version ``alias`` names, None when there is none, or False if the registry never answered."""
    deadline = time.monotonic() + timeout_s
    delay = 1.0
    while True:
        try:
            client.search_registered_models(max_results=1)  # raises while the registry is unreachable
            return alias_version(client, name, alias)
        except Exception as exc:  # noqa: BLE001 - unreachable registry: keep waiting until the deadline
            if time.monotonic() + delay > deadline:
                log.warning("registry unreachable (%s); not bootstrapping", type(exc).__name__)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings()
    name, alias, uri = settings.model_name, settings.model_alias, settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    # Lock first: on an empty database even creating MLflow's tables races between two instances.
    with deploy_lock(settings.database_url):
        client = MlflowClient()  # creating the store may create its tables: inside the lock
        served = wait_for_registry(client, name, alias, settings.bootstrap_timeout_s)
        if served is False:
            return 0  # start the API anyway: it serves its cached model or reports "down" on /health
        if served:
            log.info("%s@%s is version %s on %s; nothing to do", name, alias, served, redact(uri))
            return 0
        log.info("no %s@%s on %s: training one on the bundled data", name, alias, redact(uri))
        from pipeline import main as train_main

        with bootstrap_credential(uri) as disarm:
            # The defaults of pipeline/config.py unless BOOTSTRAP_TRAIN_ARGS says otherwise; name and alias from
            # the settings.
            code = train_main.main(shlex.split(settings.bootstrap_train_args))
            if code == 0:
                disarm()
        return code


@contextmanager
def bootstrap_credential(uri: str) -> Iterator[Any]:
    """Use the bootstrap user for what is inside (when one is configured) and hand back a ``disarm`` that
    makes its password unusable; the API's own credential is restored afterwards."""
    username, password = os.environ.get("MLFLOW_BOOTSTRAP_USERNAME"), os.environ.get("MLFLOW_BOOTSTRAP_PASSWORD")
    if not (username and password and uri.startswith(("http://", "https://"))):
        yield lambda: None
        return
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=username, MLFLOW_TRACKING_PASSWORD=password)

    def disarm() -> None:
        from deploy.users import UsersError, disarm_own_password

        try:
            disarm_own_password(uri, username, password)
            log.info("bootstrap credential %s disarmed", username)
        except (UsersError, OSError) as exc:  # the MLflow launcher disarms it at its next start anyway
            log.warning("could not disarm the bootstrap credential %s (%s)", username, exc)

    try:
        yield disarm
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if __name__ == "__main__":
    sys.exit(main())
