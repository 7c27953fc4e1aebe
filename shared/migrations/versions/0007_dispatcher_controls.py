"""Live changes of the dispatchers' limits, classes and weights, in order: a dispatcher
shard that is told one (``PUT /limits`` ...) appends it to ``dispatcher_controls``, and
every shard applies each, in version order, at its next round (a shard joining applies
them all). The log starts afresh when the first shard of a cluster starts. Each shard
also says in its heartbeat where its admin API answers (``dispatcher_shards.url``), so
that any shard can send a question about a host to the shard that serves it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatcher_controls",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("section", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("made_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("dispatcher_shards") as batch:
        batch.add_column(sa.Column("url", sa.String(256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dispatcher_shards") as batch:
        batch.drop_column("url")
    op.drop_table("dispatcher_controls")
