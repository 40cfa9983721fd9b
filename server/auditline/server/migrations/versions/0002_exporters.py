"""Exporters created through ExporterService.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "exporters",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("bucket", sa.String(length=63), nullable=False),
        sa.Column("external", sa.JSON(), nullable=True),
        sa.Column("prefix", sa.String(length=256), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("compression", sa.String(length=16), nullable=False),
        sa.Column("flush_interval", sa.Float(), nullable=False),
        sa.Column("max_file_bytes", sa.Integer(), nullable=False),
        sa.Column("retention_mode", sa.String(length=16), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("log_types", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("display_name"),
    )


def downgrade() -> None:
    op.drop_table("exporters")
