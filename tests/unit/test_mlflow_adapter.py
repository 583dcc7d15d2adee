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


def test_reset_after_fork_replaces_a_held_engine_lock() -> None:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    held = threading.Lock()
    held.acquire()  # as a master thread stuck creating an engine leaves it in a forked worker
    saved, SqlAlchemyStore._engine_map_lock = SqlAlchemyStore._engine_map_lock, held
    try:
        mlflow_adapter.reset_after_fork()
        assert SqlAlchemyStore._engine_map_lock is not held
        assert SqlAlchemyStore._engine_map_lock.acquire(timeout=1)
        SqlAlchemyStore._engine_map_lock.release()
    finally:
        SqlAlchemyStore._engine_map_lock = saved


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
