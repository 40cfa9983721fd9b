"""Each node's exporter status, so that any replica shows every node's.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "exporter_status",
        sa.Column("exporter_id", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_error_time", sa.Float(), nullable=False),
        sa.Column("last_success_time", sa.Float(), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("backlog", sa.BigInteger(), nullable=False),
        sa.Column("last_object_key", sa.Text(), nullable=False),
        sa.Column("reported_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("exporter_id", "node_id"),
    )


def downgrade() -> None:
    op.drop_table("exporter_status")
