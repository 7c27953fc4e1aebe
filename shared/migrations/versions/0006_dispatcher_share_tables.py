"""Dispatcher shards agree on one sequence of share tables: each version of the split of
the global limit is a row of ``dispatcher_share_tables``, and a shard's heartbeat says
which version it has seen and obeys (``dispatcher_shards.seen_version``), its events in
flight reported with it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-11
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatcher_share_tables",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("shares", sa.Text, nullable=False),
        sa.Column("made_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("dispatcher_shards") as batch:
        batch.add_column(sa.Column("seen_version", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dispatcher_shards") as batch:
        batch.drop_column("seen_version")
    op.drop_table("dispatcher_share_tables")
