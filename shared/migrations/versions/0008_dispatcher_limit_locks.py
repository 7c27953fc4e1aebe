"""Named limits stay global across dispatcher shards: one row per action limit or group
budget (``dispatcher_limit_locks``), which a shard locks in the transaction that marks a
batch carrying work of that limit dispatched, then counts the limit's use in the ledger
(shared/named_budget.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatcher_limit_locks",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("dispatcher_limit_locks")
