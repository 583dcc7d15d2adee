"""inference_batch_job: one summary row per batch scoring job (pipeline/batch), not one per scored record.

Revision ID: 0002_batch_job
Revises: 0001_inference_log
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002_batch_job"
down_revision = "0001_inference_log"
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "inference_batch_job",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("model_uri", sa.Text, nullable=False),
        sa.Column("input_uri", sa.Text, nullable=False),
        sa.Column("output_uri", sa.Text, nullable=False),
        sa.Column("engine", sa.String(16), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("scored", sa.BigInteger, nullable=False),
        sa.Column("invalid", sa.BigInteger, nullable=False),
        sa.Column("errors", _json, nullable=False),
        sa.Column("rows_per_second", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
    )
    # The monitor job counts one version's jobs in its window.
    op.create_index("ix_inference_batch_job_model_started", "inference_batch_job",
                    ["model_name", "model_version", "started_at"])  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_inference_batch_job_model_started", "inference_batch_job")
    op.drop_table("inference_batch_job")
