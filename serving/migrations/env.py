"""Alembic environment for the API's own tables (inference log, outcomes). Online migrations only."""

from __future__ import annotations

from alembic import context

from serving.inference_db import VERSION_TABLE, make_engine, metadata

url = context.config.get_main_option("sqlalchemy.url")
engine = make_engine(url)
try:
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
