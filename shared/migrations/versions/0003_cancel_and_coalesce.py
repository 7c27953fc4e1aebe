"""Cancel and coalesce: an event may end ``cancelled`` (a status, no column), and an
event may coalesce (``events.coalescing``): at most one coalescing event not yet
dispatched per (host, VM, policy, action), kept by a unique partial index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: a frozen copy of shared.db.COALESCING
WHERE = sa.text("coalescing AND status IN ('pending', 'queued')")


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(
            sa.Column("coalescing", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_index(
        "ux_events_coalesce",
        "events",
        ["host", "vm", "policy", "action"],
        unique=True,
        sqlite_where=WHERE,
        postgresql_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("ux_events_coalesce", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("coalescing")
