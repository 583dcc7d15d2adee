"""Fixtures of the in-process tier: one real registered model per session (trained by the pipeline with fast,
fixed options into a throwaway SQLite registry) and the serving app over it in a FastAPI TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FAST_TRAIN, backend_env, run_pipeline


@pytest.fixture(scope="session")
def registry_uri(tmp_path_factory: pytest.TempPathFactory) -> str:

    tmp = tmp_path_factory.mktemp("unit-registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    out = run_pipeline(backend_env(uri, tmp / "artifacts"), *FAST_TRAIN)
    assert out.returncode == 0, out.stderr[-3000:]
    return uri


def serving_env(uri: str, cache: Path, **extra: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": uri, "MODEL_CACHE_DIR": str(cache), "RELOAD_INTERVAL_S": "0", **extra}


@pytest.fixture(scope="session")
def client(registry_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The real app (create_app over a ModelStore that loaded the registered champion) in a TestClient."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.model_store import ModelStore
    from serving.settings import Settings

    settings = Settings.from_env(
        serving_env(
            registry_uri, tmp_path_factory.mktemp("cache"), MAX_ROWS="50", MAX_BODY_BYTES="20000", HOST="127.0.0.1"
        )
    )
    store = ModelStore(settings)
    # Authentication is not the subject here (tests/unit/test_api_auth.py is): off, as allowed on loopback.
    app = create_app(settings, store, {"API_AUTH": "off"})
    store.load_initial()
    assert store.current is not None, store.problem
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def served(client) -> object:
    """The version the app serves (its spec, rules and pyfunc)."""
    return client.app.state.store.current


@pytest.fixture(scope="session", autouse=True)
def inference_log_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """In-process apps log their predictions into a throwaway database and spool, never the project's
    ``.inference.db`` (set on the module's cached config, not os.environ, so child processes are unaffected)."""
    from serving import inference_log

    tmp = tmp_path_factory.mktemp("inference-log")
    saved = inference_log._config
    inference_log._config = inference_log.Config.from_env(
        {"APP_DATABASE_URL": f"sqlite:///{tmp / 'inference.db'}", "INFERENCE_SPOOL_DIR": str(tmp / "spool")}
    )
    yield
    inference_log._config = saved
