"""The ledger as of 0.4: events, the mapping (hosts, VMs, keys, its version), the
dispatcher lease, and the monitoring repository.

A frozen copy of the schema (not ``shared.db``'s tables, which move on with later
revisions).

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NAME = sa.String(128)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", NAME, primary_key=True),
        sa.Column("host", NAME, nullable=False),
        sa.Column("vm", NAME, nullable=False),
        sa.Column("policy", NAME, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("error", sa.Text),
        sa.Column("dispatch_id", sa.String(64)),
        sa.Column("accepted_at", sa.Float, nullable=False),
        sa.Column("dispatched_at", sa.Float),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("fence", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("dead_at", sa.Float),
    )
    op.create_index("ix_events_status", "events", ["status"])
    op.create_index("ix_events_key_status", "events", ["host", "vm", "policy", "status"])
    op.create_table(
        "hosts",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", NAME, nullable=False, unique=True),
        sa.Column("available", sa.Boolean, nullable=False),
    )
    op.create_table(
        "vms",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", NAME, nullable=False),
        sa.Column("vm", NAME, nullable=False),
        sa.Column("available", sa.Boolean, nullable=False),
        sa.Column("removing_since", sa.Float),
        sa.UniqueConstraint("host", "vm"),
    )
    op.create_table(
        "keys",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", NAME, nullable=False),
        sa.Column("vm", NAME, nullable=False),
        sa.Column("policy", NAME, nullable=False),
        sa.UniqueConstraint("host", "vm", "policy"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", NAME, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    version = op.create_table(
        "mapping_version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])
    op.create_table(
        "monitor_vms",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("vm", NAME, primary_key=True),
        sa.Column("host", NAME, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cpu", sa.Float, nullable=False),
        sa.Column("ram", sa.Float, nullable=False),
        sa.Column("grp", NAME),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
    )
    op.create_table(
        "monitor_hosts",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("host", NAME, primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "monitor_groups",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("grp", NAME, primary_key=True),
        sa.Column("min", sa.Integer, nullable=False),
        sa.Column("max", sa.Integer, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "monitor_groups",
        "monitor_hosts",
        "monitor_vms",
        "mapping_version",
        "leases",
        "keys",
        "vms",
        "hosts",
        "events",
    ):
        op.drop_table(table)
