"""The foundation of dispatcher shards: a lease carries a fencing token
(``leases.token``, one more whenever the lease passes to another holder), and the shards
alive say what they hold and need (``dispatcher_shards``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("token", sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "dispatcher_shards",
        sa.Column("shard", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("demand", sa.Integer, nullable=False, server_default="0"),
        sa.Column("in_flight", sa.Integer, nullable=False, server_default="0"),
        sa.Column("partitions", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("dispatcher_shards")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("token")
