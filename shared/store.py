"""The event ledger: status of every event and the mapping, shared by all services.

One SQL database (SQLite on one machine, PostgreSQL across machines) reached through
SQLAlchemy Core. Every state change is one conditional UPDATE, so the ledger — not
timing — decides races between redeliveries:

    pending --confirm--> queued --scheduler--> dispatched --worker claim--> running
        --> succeeded | failed

A worker may claim a ``dispatched`` event with any dispatch id, and re-claim a
``running`` one only with the dispatch id that claimed it (a redelivery of the same task
message). That is what makes a second task message for one event harmless.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shared.models import (
    FINISHED,
    HostView,
    Key,
    MappingDelta,
    MappingSnapshot,
    PolicyView,
    Status,
    VmEventMessage,
    VmView,
)
from shared.topology import Topology

metadata = sa.MetaData()

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("vm", sa.String(128), nullable=False),
    sa.Column("policy", sa.String(128), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("worker", sa.String(255)),
    sa.Column("error", sa.Text),
    sa.Column("dispatch_id", sa.String(64)),
    sa.Column("accepted_at", sa.Float, nullable=False),
    sa.Column("dispatched_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_events_status", "status"),
    sa.Index("ix_events_key_status", "host", "vm", "policy", "status"),
)

hosts = sa.Table(
    "hosts",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(128), nullable=False, unique=True),
    sa.Column("available", sa.Boolean, nullable=False, default=True),
)

vms = sa.Table(
    "vms",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("vm", sa.String(128), nullable=False),
    sa.Column("available", sa.Boolean, nullable=False, default=True),
    sa.UniqueConstraint("host", "vm"),
)

keys = sa.Table(
    "keys",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("vm", sa.String(128), nullable=False),
    sa.Column("policy", sa.String(128), nullable=False),
    sa.Column("queue", sa.String(255), nullable=False),
    sa.UniqueConstraint("host", "vm", "policy"),
)

mapping_version = sa.Table(
    "mapping_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


class Claim(Enum):
    CLAIMED = "claimed"  # run the action
    FINISHED = "finished"  # already done: no second effect, re-announce the completion
    HELD = "held"  # another task message for this event is running it: do nothing
    UNKNOWN = "unknown"  # no such event (or not yet dispatched)


class Conflict(Exception):
    """A re-posted event id carries a different host, VM, policy or action."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"event id {event_id!r} was already accepted with other content")
        self.event_id = event_id


@dataclass(frozen=True)
class Accepted:
    #: events to publish now (new ones, and re-posts of ones never confirmed)
    to_publish: list[VmEventMessage]
    #: ids in request order
    ids: list[str]


@dataclass(frozen=True)
class InFlight:
    id: str
    host: str
    vm: str
    policy: str
    status: Status


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so several processes can
    share one file."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class Store:
    def __init__(self, engine: Engine, topology: Topology) -> None:
        self.engine = engine
        self.topology = topology

    @classmethod
    def connect(cls, url: str, topology: Topology) -> Store:
        store = cls(make_engine(url), topology)
        store.create_schema()
        return store

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            if conn.execute(sa.select(mapping_version.c.version)).first() is None:
                with contextlib.suppress(sa.exc.IntegrityError):  # another process won
                    conn.execute(mapping_version.insert().values(id=1, version=0))

    # -- producer: accepting events ------------------------------------------------
    def accept(self, batch: Sequence[VmEventMessage]) -> Accepted:
        """Record ``batch`` as pending. Ids seen before are not stored twice: a re-post of
        a confirmed event is accepted without publishing again, a re-post of one never
        confirmed (the producer died before the broker confirmed) is published again.
        Raises :class:`Conflict` if a known id comes with other content."""
        ids = [e.id for e in batch]
        with self.engine.begin() as conn:
            known = {
                r.id: r
                for r in conn.execute(
                    sa.select(
                        events.c.id,
                        events.c.host,
                        events.c.vm,
                        events.c.policy,
                        events.c.action,
                        events.c.status,
                    ).where(events.c.id.in_(ids))
                )
            }
            fresh: list[VmEventMessage] = []
            to_publish: list[VmEventMessage] = []
            first: dict[str, tuple[str, str, str, str]] = {}  # id -> content, this batch
            for e in batch:
                content = (e.host, e.vm, e.policy, e.action.value)
                old = known.get(e.id)
                before = (old.host, old.vm, old.policy, old.action) if old else first.get(e.id)
                if before is not None and before != content:
                    raise Conflict(e.id)
                if e.id in first:
                    continue
                first[e.id] = content
                if old is None:
                    fresh.append(e)
                    to_publish.append(e)
                elif old.status == Status.PENDING:
                    to_publish.append(e)
            if fresh:
                conn.execute(
                    events.insert(),
                    [
                        {
                            "id": e.id,
                            "host": e.host,
                            "vm": e.vm,
                            "policy": e.policy,
                            "action": e.action.value,
                            "payload": json.dumps(e.payload),
                            "status": Status.PENDING.value,
                            "attempts": 0,
                            "accepted_at": e.accepted_at,
                        }
                        for e in fresh
                    ],
                )
        return Accepted(to_publish=to_publish, ids=ids)

    def confirm(self, ids: Iterable[str]) -> None:
        """The broker confirmed these: pending -> queued."""
        ids = list(ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                events.update()
                .where(events.c.id.in_(ids), events.c.status == Status.PENDING.value)
                .values(status=Status.QUEUED.value)
            )

    def discard(self, ids: Iterable[str]) -> None:
        """Publishing failed: forget these pending events (the client got an error)."""
        ids = list(ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                events.delete().where(events.c.id.in_(ids), events.c.status == Status.PENDING.value)
            )

    def get(self, event_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(events).where(events.c.id == event_id)).first()
        return None if row is None else dict(row._mapping)

    # -- scheduler -----------------------------------------------------------------
    def mark_dispatched(self, event_id: str, dispatch_id: str, at: float) -> Status | None:
        """queued|pending -> dispatched. Returns the status the event had before (so the
        caller can tell a duplicate), ``None`` for an unknown id."""
        with self.engine.begin() as conn:
            res = conn.execute(
                events.update()
                .where(
                    events.c.id == event_id,
                    events.c.status.in_([Status.PENDING.value, Status.QUEUED.value]),
                )
                .values(status=Status.DISPATCHED.value, dispatch_id=dispatch_id, dispatched_at=at)
            )
            if res.rowcount == 1:
                return Status.QUEUED
            row = conn.execute(sa.select(events.c.status).where(events.c.id == event_id)).first()
        return None if row is None else Status(row.status)

    def status_of(self, event_id: str) -> Status | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(events.c.status).where(events.c.id == event_id)).first()
        return None if row is None else Status(row.status)

    def queued_by_action(self) -> dict[str, int]:
        """Events accepted and not yet dispatched, per action."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events.c.action, sa.func.count().label("n"))
                .where(events.c.status == Status.QUEUED.value)
                .group_by(events.c.action)
            ).all()
        return {r.action: int(r.n) for r in rows}

    def in_flight(self) -> list[InFlight]:
        """Events dispatched and not finished: what a restarted scheduler must count."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    events.c.id, events.c.host, events.c.vm, events.c.policy, events.c.status
                ).where(events.c.status.in_([Status.DISPATCHED.value, Status.RUNNING.value]))
            ).all()
        return [InFlight(r.id, r.host, r.vm, r.policy, Status(r.status)) for r in rows]

    # -- worker --------------------------------------------------------------------
    def claim(self, event_id: str, dispatch_id: str, worker: str, at: float) -> Claim:
        with self.engine.begin() as conn:
            res = conn.execute(
                events.update()
                .where(
                    events.c.id == event_id,
                    sa.or_(
                        events.c.status == Status.DISPATCHED.value,
                        sa.and_(
                            events.c.status == Status.RUNNING.value,
                            events.c.dispatch_id == dispatch_id,
                        ),
                    ),
                )
                .values(
                    status=Status.RUNNING.value,
                    dispatch_id=dispatch_id,
                    worker=worker,
                    started_at=at,
                    attempts=events.c.attempts + 1,
                    error=None,
                )
            )
            if res.rowcount == 1:
                return Claim.CLAIMED
            row = conn.execute(sa.select(events.c.status).where(events.c.id == event_id)).first()
        if row is None:
            return Claim.UNKNOWN
        if Status(row.status) in FINISHED:
            return Claim.FINISHED
        if row.status == Status.RUNNING.value:
            return Claim.HELD
        return Claim.UNKNOWN

    def finish(
        self, event_id: str, dispatch_id: str, ok: bool, error: str | None, at: float
    ) -> bool:
        status = Status.SUCCEEDED if ok else Status.FAILED
        with self.engine.begin() as conn:
            res = conn.execute(
                events.update()
                .where(
                    events.c.id == event_id,
                    events.c.status == Status.RUNNING.value,
                    events.c.dispatch_id == dispatch_id,
                )
                .values(status=status.value, error=error, finished_at=at)
            )
        return bool(res.rowcount == 1)

    # -- mapping -------------------------------------------------------------------
    def _bump(self, conn: sa.Connection) -> int:
        conn.execute(mapping_version.update().values(version=mapping_version.c.version + 1))
        return int(conn.execute(sa.select(mapping_version.c.version)).scalar_one())

    def mapping_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(mapping_version.c.version)).scalar_one())

    def ensure_keys(self, new_keys: Iterable[Key]) -> list[MappingDelta]:
        """Add the keys not yet in the mapping (first appearance fixes their order)."""
        deltas: list[MappingDelta] = []
        with self.engine.begin() as conn:
            for key in dict.fromkeys(new_keys):
                if conn.execute(
                    sa.select(keys.c.seq).where(
                        keys.c.host == key.host, keys.c.vm == key.vm, keys.c.policy == key.policy
                    )
                ).first():
                    continue
                if not conn.execute(sa.select(hosts.c.seq).where(hosts.c.host == key.host)).first():
                    conn.execute(hosts.insert().values(host=key.host, available=True))
                if not conn.execute(
                    sa.select(vms.c.seq).where(vms.c.host == key.host, vms.c.vm == key.vm)
                ).first():
                    conn.execute(vms.insert().values(host=key.host, vm=key.vm, available=True))
                queue = self.topology.event_queue_name(key)
                conn.execute(
                    keys.insert().values(host=key.host, vm=key.vm, policy=key.policy, queue=queue)
                )
                deltas.append(
                    MappingDelta(
                        version=self._bump(conn),
                        op="key_added",
                        host=key.host,
                        vm=key.vm,
                        policy=key.policy,
                        queue=queue,
                    )
                )
        return deltas

    def set_host_available(self, host: str, available: bool) -> MappingDelta | None:
        with self.engine.begin() as conn:
            res = conn.execute(
                hosts.update().where(hosts.c.host == host).values(available=available)
            )
            if res.rowcount == 0:
                return None
            return MappingDelta(
                version=self._bump(conn), op="host_availability", host=host, available=available
            )

    def set_vm_available(self, host: str, vm: str, available: bool) -> MappingDelta | None:
        with self.engine.begin() as conn:
            res = conn.execute(
                vms.update().where(vms.c.host == host, vms.c.vm == vm).values(available=available)
            )
            if res.rowcount == 0:
                return None
            return MappingDelta(
                version=self._bump(conn),
                op="vm_availability",
                host=host,
                vm=vm,
                available=available,
            )

    def unfinished_count(self, host: str, vm: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(events)
                    .where(
                        events.c.host == host,
                        events.c.vm == vm,
                        events.c.status.notin_([s.value for s in FINISHED]),
                    )
                ).scalar_one()
            )

    def queues(self) -> list[tuple[str, str, str]]:
        """(host, vm, queue) of every key in the mapping."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(keys.c.host, keys.c.vm, keys.c.queue)).all()
        return [(r.host, r.vm, r.queue) for r in rows]

    def vm_queues(self, host: str, vm: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(keys.c.queue).where(keys.c.host == host, keys.c.vm == vm)
                ).scalars()
            )

    def remove_vm(self, host: str, vm: str) -> MappingDelta | None:
        with self.engine.begin() as conn:
            res = conn.execute(vms.delete().where(vms.c.host == host, vms.c.vm == vm))
            if res.rowcount == 0:
                return None
            conn.execute(keys.delete().where(keys.c.host == host, keys.c.vm == vm))
            return MappingDelta(version=self._bump(conn), op="vm_removed", host=host, vm=vm)

    def snapshot(self) -> MappingSnapshot:
        with self.engine.connect() as conn:
            version = int(conn.execute(sa.select(mapping_version.c.version)).scalar_one())
            host_rows = conn.execute(sa.select(hosts).order_by(hosts.c.seq)).all()
            vm_rows = conn.execute(sa.select(vms).order_by(vms.c.seq)).all()
            key_rows = conn.execute(sa.select(keys).order_by(keys.c.seq)).all()
            pending = {
                (r.host, r.vm, r.policy): int(r.n)
                for r in conn.execute(
                    sa.select(
                        events.c.host, events.c.vm, events.c.policy, sa.func.count().label("n")
                    )
                    .where(events.c.status == Status.QUEUED.value)
                    .group_by(events.c.host, events.c.vm, events.c.policy)
                )
            }
        out: dict[str, HostView] = {
            h.host: HostView(available=h.available, vms={}) for h in host_rows
        }
        for v in vm_rows:
            if v.host in out:
                out[v.host].vms[v.vm] = VmView(available=v.available, policies={})
        for k in key_rows:
            vm_view = out.get(k.host, HostView(available=True, vms={})).vms.get(k.vm)
            if vm_view is not None:
                vm_view.policies[k.policy] = PolicyView(
                    queue=k.queue, pending=pending.get((k.host, k.vm, k.policy), 0)
                )
        return MappingSnapshot(version=version, hosts=out)
