"""inference_log and inference_outcome, with the indexes the monitoring queries use.

Revision ID: 0001_inference_log
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_inference_log"
down_revision = None
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "inference_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("route", sa.String(32), nullable=False),
        sa.Column("caller", sa.String(200), nullable=False),
        sa.Column("features", _json, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("risk_level", sa.String(32), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.UniqueConstraint("request_id", "row", name="uq_inference_log_request_row"),
    )
    # Monitoring filters by time (retention purge, date range) and by model version within a time range.
    op.create_index("ix_inference_log_ts", "inference_log", ["ts"])
    op.create_index("ix_inference_log_model_ts", "inference_log", ["model_name", "model_version", "ts"])
    op.create_table(
        "inference_outcome",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("row", sa.Integer, primary_key=True),
        sa.Column("diabetes", sa.Boolean, nullable=False),
        sa.Column("test", sa.String(32), nullable=False),
        sa.Column("test_date", sa.Date, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("caller", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("inference_outcome")
    op.drop_index("ix_inference_log_model_ts", "inference_log")
    op.drop_index("ix_inference_log_ts", "inference_log")
    op.drop_table("inference_log")
