"""The repository of what each monitored source last reported, persisted in the ledger's
database so that a restarted producer diffs against what it saw before (and so acts on
no change twice). Only what changed is written: a relist that finds nothing new writes
no row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from producer.monitoring.model import (
    Diff,
    GroupRecord,
    HostRecord,
    HostState,
    View,
    VmRecord,
    VmState,
)
from shared.db import monitor_groups, monitor_hosts, monitor_vms
from shared.migrations import migrate

#: rows per statement: under SQLite's bound-parameter limit for every table here
CHUNK = 500


class Repository:
    """One source's rows. :meth:`load` builds the in-memory :class:`View` the updater
    diffs against; :meth:`write` persists one diff in one transaction."""

    def __init__(self, engine: Engine, source: str) -> None:
        self.engine = engine
        self.source = source

    def create_schema(self) -> None:
        """Its tables are the ledger's (:mod:`shared.migrations` keeps them)."""
        migrate(self.engine)

    def load(self) -> View:
        view = View()
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(monitor_hosts).where(self._mine(monitor_hosts))):
                view.hosts[r.host] = HostRecord(r.host, HostState(r.state), r.version)
            for r in conn.execute(sa.select(monitor_groups).where(self._mine(monitor_groups))):
                view.groups[r.grp] = GroupRecord(r.grp, r.min, r.max, r.version)
            for r in conn.execute(sa.select(monitor_vms).where(self._mine(monitor_vms))):
                view.vms[r.vm] = VmRecord(
                    r.vm, r.host, VmState(r.state), r.cpu, r.ram, r.grp, r.version
                )
                view.since[r.vm] = r.since
                if r.grp is not None:
                    view.members.setdefault(r.grp, set()).add(r.vm)
        return view

    def write(self, diff: Diff, view: View) -> int:
        """Persist ``diff`` (already applied to ``view``, which gives each VM's
        ``since``); returns the rows written."""
        if not diff.writes:
            return 0
        with self.engine.begin() as conn:
            self._replace(
                conn,
                monitor_vms,
                monitor_vms.c.vm,
                [r.vm for r in diff.upsert_vms] + diff.delete_vms,
                [self._vm_row(r, view) for r in diff.upsert_vms],
            )
            self._replace(
                conn,
                monitor_hosts,
                monitor_hosts.c.host,
                [r.host for r in diff.upsert_hosts] + diff.delete_hosts,
                [
                    {
                        "source": self.source,
                        "host": r.host,
                        "state": r.state.value,
                        "version": r.version,
                    }
                    for r in diff.upsert_hosts
                ],
            )
            self._replace(
                conn,
                monitor_groups,
                monitor_groups.c.grp,
                [r.group for r in diff.upsert_groups] + diff.delete_groups,
                [
                    {
                        "source": self.source,
                        "grp": r.group,
                        "min": r.min,
                        "max": r.max,
                        "version": r.version,
                    }
                    for r in diff.upsert_groups
                ],
            )
        return diff.writes

    def _replace(
        self,
        conn: Connection,
        table: sa.Table,
        name: sa.Column[Any],
        names: Sequence[str],
        rows: Sequence[dict[str, Any]],
    ) -> None:
        """Delete then insert: one portable upsert for SQLite and PostgreSQL alike."""
        for i in range(0, len(names), CHUNK):
            conn.execute(table.delete().where(self._mine(table), name.in_(names[i : i + CHUNK])))
        for i in range(0, len(rows), CHUNK):
            conn.execute(table.insert(), rows[i : i + CHUNK])

    def _vm_row(self, r: VmRecord, view: View) -> dict[str, Any]:
        return {
            "source": self.source,
            "vm": r.vm,
            "host": r.host,
            "state": r.state.value,
            "cpu": r.cpu,
            "ram": r.ram,
            "grp": r.group,
            "version": r.version,
            "since": view.since.get(r.vm, 0.0),
        }

    def _mine(self, table: sa.Table) -> sa.ColumnElement[bool]:
        return table.c.source == self.source
