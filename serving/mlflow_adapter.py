"""Every private MLflow (and gunicorn, uvicorn) internal the serving API relies on, in one place.

Each is used for speed or for a defect MLflow's public API cannot avoid; ``tests/unit/test_mlflow_adapter.py``
fails naming the symbol when an upgrade moves one. Nothing else in serving/ imports MLflow internals.

- ``mlflow.pyfunc.scoring_server`` constants: the protocol's content types and input format names;
- ``scoring_server._split_data_and_params``: MLflow's own split of the JSON envelope;
- ``mlflow.tracking._model_registry.client.ModelRegistryClient``: the registry half of MlflowClient (a database
  tracking store costs ~1 s and ~50 MB at start-up);
- ``SqlAlchemyStore._engine_map`` and ``_engine_map_lock``, and the store registries' ``_building_store_lock``
  (``mlflow.tracking._model_registry.registry``, ``mlflow.tracking._tracking_service.registry``): a forked
  worker must not reuse the master's connections, nor a lock that a master thread held when the master forked;
- ``mlflow.store.db.utils.MAX_RETRY_COUNT``: MLflow retries a down database for ~100 s inside one call, holding
  the lock above; serving bounds each call and its model watcher retries instead;
- logger ``mlflow.store.db.utils``: logs a ~130-line traceback per failed call;
- ``mlflow.protos.databricks_pb2.ErrorCode``: MLflow's error code names;
- gunicorn ``Arbiter.LISTENERS``: the listening sockets, to set TCP_NODELAY;
- uvicorn's ``HttpToolsProtocol`` (subclassed by ``serving.worker.Protocol`` for the connection limits uvicorn
  lacks): its parser callbacks and connection state (``UVICORN_PROTOCOL``).
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

from mlflow.pyfunc import scoring_server as _scoring

CONTENT_TYPE_JSON: str = _scoring.CONTENT_TYPE_JSON
CONTENT_TYPE_CSV: str = _scoring.CONTENT_TYPE_CSV
CONTENT_TYPE_PARQUET: str = _scoring.CONTENT_TYPE_PARQUET
CONTENT_TYPES: list[str] = list(_scoring.CONTENT_TYPES)
DF_RECORDS: str = _scoring.DF_RECORDS
DF_SPLIT: str = _scoring.DF_SPLIT
INSTANCES: str = _scoring.INSTANCES
INPUTS: str = _scoring.INPUTS
SUPPORTED_FORMATS: set[str] = set(_scoring.SUPPORTED_FORMATS)
REQUIRED_INPUT_FORMAT: str = _scoring.REQUIRED_INPUT_FORMAT
split_data_and_params = _scoring._split_data_and_params

SQLALCHEMY_STORES = (
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.tracking.sqlalchemy_store",
)
STORE_REGISTRIES = (
    "mlflow.tracking._model_registry.registry",
    "mlflow.tracking._tracking_service.registry",
)
DB_UTILS = "mlflow.store.db.utils"
DB_RETRIES = 2  # MLflow's default (10) sleeps ~100 s in one call while holding the engine-map lock


def registry_client(uri: str) -> Any:
    """A client with only the registry store (public fallback: MlflowClient, which also builds a tracking
    store)."""
    try:
        from mlflow.tracking._model_registry.client import ModelRegistryClient
    except ImportError:  # the unit test names this; serving still works, a little slower to start
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    return ModelRegistryClient(uri, uri)


def _store_classes() -> list[Any]:
    out = []
    for module in SQLALCHEMY_STORES:
        try:
            out.append(importlib.import_module(module).SqlAlchemyStore)
        except ImportError:
            continue
    return out


def reset_after_fork() -> None:
    """In a forked worker: drop the database connections inherited from the master (sharing one socket
    between processes corrupts it) and replace MLflow's store-building and engine-map locks. A master thread
    that was building the store when the master forked (registry down at start) left them held in the child
    for good: every later registry call in the worker would block on them and never follow the alias."""
    for cls in _store_classes():
        for engine in list(getattr(cls, "_engine_map", {}).values()):
            engine.dispose(close=False)
        if hasattr(cls, "_engine_map_lock"):
            cls._engine_map_lock = threading.Lock()
    for module in STORE_REGISTRIES:  # held while a store (and its engine) is built
        mod = importlib.import_module(module)
        if hasattr(mod, "_building_store_lock"):
            mod._building_store_lock = threading.Lock()


def bound_database_retries() -> None:
    """Each registry call fails fast (a few tenths of a second of retries) instead of ~100 s."""
    utils = importlib.import_module(DB_UTILS)
    if hasattr(utils, "MAX_RETRY_COUNT"):
        utils.MAX_RETRY_COUNT = min(utils.MAX_RETRY_COUNT, DB_RETRIES)


class _OneLine(logging.Filter):
    """MLflow's database-error records without their traceback and multi-line text: the first line only.
    The model watcher logs its own line per failed check."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and (record.exc_info or "\n" in record.getMessage()):
            first = record.getMessage().split("\n", 2)
            record.msg = " ".join(part.strip() for part in first[:2])[:300]
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_ONE_LINE = _OneLine()


def quiet_database_errors() -> None:
    logger = logging.getLogger(DB_UTILS)
    if _ONE_LINE not in logger.filters:
        logger.addFilter(_ONE_LINE)


def error_code_names() -> set[str]:
    from mlflow.protos import databricks_pb2

    return set(databricks_pb2.ErrorCode.keys())


def listening_sockets(server: Any) -> list[Any]:
    """gunicorn's listening sockets (the arbiter's LISTENERS)."""
    return [getattr(listener, "sock", None) for listener in server.LISTENERS]


def missing_symbols() -> list[str]:
    """Every internal above that this MLflow/gunicorn no longer has (empty when all are in place)."""
    missing = []
    for name in ("_split_data_and_params", "CONTENT_TYPE_PARQUET", "REQUIRED_INPUT_FORMAT"):
        if not hasattr(_scoring, name):
            missing.append(f"mlflow.pyfunc.scoring_server.{name}")
    try:
        from mlflow.tracking._model_registry.client import ModelRegistryClient  # noqa: F401
    except ImportError:
        missing.append("mlflow.tracking._model_registry.client.ModelRegistryClient")
    for module in SQLALCHEMY_STORES:
        cls = getattr(importlib.import_module(module), "SqlAlchemyStore", None)
        for attr in ("_engine_map", "_engine_map_lock"):
            if cls is None or not hasattr(cls, attr):
                missing.append(f"{module}.SqlAlchemyStore.{attr}")
    for module in STORE_REGISTRIES:
        if not hasattr(importlib.import_module(module), "_building_store_lock"):
            missing.append(f"{module}._building_store_lock")
    if not hasattr(importlib.import_module(DB_UTILS), "MAX_RETRY_COUNT"):
        missing.append(f"{DB_UTILS}.MAX_RETRY_COUNT")
    from gunicorn.arbiter import Arbiter

    if not hasattr(Arbiter, "LISTENERS"):
        missing.append("gunicorn.arbiter.Arbiter.LISTENERS")
    return missing + _missing_uvicorn()


# What serving.worker.Protocol overrides or reads: methods of uvicorn's httptools protocol, and attributes that
# its __init__ (or the request cycle's) sets.
UVICORN_PROTOCOL = {
    "methods": ("connection_made", "data_received", "on_message_begin", "on_headers_complete", "on_message_complete"),
    "attributes": ("self.connections", "self.server_state", "self.cycle", "self.transport", "self.loop",
                   "self.timeout_keep_alive "),
    "cycle": ("self.response_started", "self.response_complete"),
}  # fmt: skip


def _missing_uvicorn() -> list[str]:
    import inspect

    from uvicorn.protocols.http import httptools_impl

    proto, cycle = httptools_impl.HttpToolsProtocol, httptools_impl.RequestResponseCycle
    missing = [f"HttpToolsProtocol.{m}" for m in UVICORN_PROTOCOL["methods"] if not hasattr(proto, m)]
    init = inspect.getsource(proto.__init__) + inspect.getsource(proto.connection_made)
    missing += [f"HttpToolsProtocol {a}" for a in UVICORN_PROTOCOL["attributes"] if a not in init]
    cycle_init = inspect.getsource(cycle.__init__)
    missing += [f"RequestResponseCycle {a}" for a in UVICORN_PROTOCOL["cycle"] if a not in cycle_init]
    return [f"uvicorn.protocols.http.httptools_impl.{m}" for m in missing]
