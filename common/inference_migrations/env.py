"""Alembic environment for the inference log's tables (common/inference_db.py). Online migrations only."""

from __future__ import annotations

from alembic import context

from common.inference_db import VERSION_TABLE, make_engine, metadata

url = context.config.get_main_option("sqlalchemy.url")
engine = make_engine(url)
try:
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
