"""Exporters' partitioning, OCSF version and Security Lake partitions (the data lake).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # Existing exporters keep what they wrote: date keys, OCSF 1.8.0.
    with op.batch_alter_table("exporters") as batch:
        batch.add_column(
            sa.Column("partitioning", sa.String(16), nullable=False, server_default="date")
        )
        batch.add_column(
            sa.Column("ocsf_version", sa.String(16), nullable=False, server_default="1.8.0")
        )
        batch.add_column(sa.Column("lake_region", sa.String(64), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("lake_account_id", sa.String(64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("exporters") as batch:
        for column in ("lake_account_id", "lake_region", "ocsf_version", "partitioning"):
            batch.drop_column(column)
