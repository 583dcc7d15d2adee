"""Every MLflow/gunicorn internal serving relies on is still where serving/mlflow_adapter.py expects it: an
upgrade that moves one fails here, naming the symbol."""

from __future__ import annotations

import logging
import threading

from serving import mlflow_adapter
from serving.errors import ERROR_CODES


def test_every_internal_is_in_place() -> None:
    missing = mlflow_adapter.missing_symbols()
    assert not missing, f"MLflow/gunicorn internals moved: {', '.join(missing)} (update serving/mlflow_adapter.py)"


def test_error_codes_are_mlflow_names() -> None:
    names = mlflow_adapter.error_code_names()
    for code in [*ERROR_CODES.values(), "INVALID_PARAMETER_VALUE", "BAD_REQUEST"]:
        assert code in names, f"mlflow.protos.databricks_pb2.ErrorCode has no {code}"


def test_reset_after_fork_replaces_held_store_locks() -> None:
    import importlib

    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    holders = [(SqlAlchemyStore, "_engine_map_lock")]
    holders += [(importlib.import_module(m), "_building_store_lock") for m in mlflow_adapter.STORE_REGISTRIES]
    saved = [getattr(obj, attr) for obj, attr in holders]
    held = threading.Lock()
    held.acquire()  # as a master thread stuck building the store leaves them in a forked worker
    try:
        for obj, attr in holders:
            setattr(obj, attr, held)
        mlflow_adapter.reset_after_fork()
        for obj, attr in holders:
            lock = getattr(obj, attr)
            assert lock is not held and lock.acquire(timeout=1), attr
            lock.release()
    finally:
        for (obj, attr), lock in zip(holders, saved, strict=True):
            setattr(obj, attr, lock)


def test_database_errors_are_logged_in_one_line(caplog) -> None:
    mlflow_adapter.quiet_database_errors()
    logger = logging.getLogger(mlflow_adapter.DB_UTILS)
    try:
        raise RuntimeError("connection refused\n\tIs the server running?\n(Background on this error at: x)")
    except RuntimeError as exc:
        with caplog.at_level(logging.WARNING, logger=mlflow_adapter.DB_UTILS):
            logger.exception("SQLAlchemy database error. The following exception is caught.\n%s", exc)
    (record,) = caplog.records
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert caplog.text.count("\n") == 1 and "Traceback" not in caplog.text
