"""The mapping host -> VM -> policy -> queue, kept in the ledger's database with a
version that every change bumps."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shared import statements
from shared.db import events, hosts, keys, mapping_version, vms, write_lock_first
from shared.errors import CarouselError
from shared.fencing import Fence
from shared.ledger import Accepted
from shared.models import (
    IN_FLIGHT,
    HostView,
    Key,
    MappingDelta,
    MappingSnapshot,
    PolicyView,
    Status,
    VmEventMessage,
    VmView,
)

#: tuples looked up per statement (SQLite binds one parameter per value: 3 per key)
_CHUNK = 300
#: events of a VM that count against its removal (pending ones only while young)
_UNFINISHED = [s.value for s in (Status.QUEUED, *IN_FLIGHT)]


class RemovalUnderway(CarouselError):
    """The VM is marked as being removed (by this or another producer process)."""

    def __init__(self, host: str, vm: str) -> None:
        super().__init__(f"VM {vm!r} on host {host!r} is being removed")
        self.host, self.vm = host, vm


class UnfinishedEvents(CarouselError):
    """A VM cannot be removed while it has unfinished events."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the VM still has {count} unfinished events")
        self.count = count


@dataclass(frozen=True)
class Admitted:
    """What :meth:`MappingStore.admit` did in its one transaction."""

    accepted: Accepted
    #: the keys of the request the mapping did not have, in first-appearance order
    new_keys: list[Key]
    #: their one mapping change (None when there are none)
    delta: MappingDelta | None


@dataclass(frozen=True)
class Retired:
    """What :meth:`MappingStore.retire_keys` did."""

    #: the keys retired: their queues deleted and their rows with them
    retired: list[Key]
    #: the candidates the mapping did not have (a VM removed, a key retired already)
    absent: list[Key]
    #: the candidates that stay: an event waits for them, a request holds them, or
    #: their queue could not be deleted
    kept: list[Key]
    #: the one mapping change of the retired keys (None when there are none)
    delta: MappingDelta | None


class MappingStore:
    engine: Engine

    def record_pending(
        self,
        conn: sa.Connection,
        batch: Sequence[VmEventMessage],
        coalesce: Collection[str] = (),
    ) -> Accepted:
        raise NotImplementedError  # shared.ledger.EventLedger's

    # -- the producer: events and their new keys in one transaction -----------------
    def admit(
        self, batch: Sequence[VmEventMessage], marks_after: float, coalesce: Collection[str] = ()
    ) -> Admitted:
        """Record ``batch`` as pending (see :meth:`EventLedger.record_pending`, which
        ``coalesce`` goes to) and add the keys
        of it the mapping lacks, with one version for all of them, in one transaction.
        Raises :class:`RemovalUnderway` if a VM of the batch carries a removal mark set
        after ``marks_after`` (an older one is void: its remover died). The VMs' rows are
        read FOR SHARE (PostgreSQL) or under the write lock (SQLite), so a removal's mark
        waits for this transaction, and this transaction sees a mark set before it."""
        for attempt in range(3):
            try:
                return self._admit(batch, marks_after, coalesce)
            except sa.exc.IntegrityError:  # a concurrent first post of the same id
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _admit(
        self, batch: Sequence[VmEventMessage], marks_after: float, coalesce: Collection[str]
    ) -> Admitted:
        batch_vms = list(dict.fromkeys((e.host, e.vm) for e in batch))
        batch_keys = list(dict.fromkeys((e.host, e.vm, e.policy) for e in batch))
        with self.engine.begin() as conn:
            write_lock_first(conn)  # every read below is of the latest state
            sql = statements.batch(conn.dialect.name)
            marked = conn.execute(sql.MARKED_VMS, sql.rows("vms", batch_vms)).all()
            for r in marked:
                if r.removing_since is not None and r.removing_since > marks_after:
                    raise RemovalUnderway(r.host, r.vm)
            new = self._missing_keys(conn, batch_keys)
            new, delta = self.add_keys(conn, new) if new else ([], None)
            accepted = self.record_pending(conn, batch, coalesce)
        return Admitted(accepted, [Key(host=h, vm=v, policy=p) for h, v, p in new], delta)

    @staticmethod
    def _missing_keys(
        conn: sa.Connection, wanted: list[tuple[str, str, str]]
    ) -> list[tuple[str, str, str]]:
        sql = statements.batch(conn.dialect.name)
        have: set[tuple[str, str, str]] = set()
        for i in range(0, len(wanted), _CHUNK):
            have.update(
                (r.host, r.vm, r.policy)
                for r in conn.execute(sql.KNOWN_KEYS, sql.rows("keys", wanted[i : i + _CHUNK]))
            )
        return [k for k in wanted if k not in have]

    @staticmethod
    def _insert_keys(conn: sa.Connection, new: list[tuple[str, str, str]]) -> None:
        """Insert ``new`` keys (none in the mapping) and any host or VM of theirs that is
        missing, each in first-appearance order."""
        new_hosts = list(dict.fromkeys(h for h, _, _ in new))
        new_vms = list(dict.fromkeys((h, v) for h, v, _ in new))
        sql = statements.batch(conn.dialect.name)
        have_hosts: set[str] = set()
        have_vms: set[tuple[str, str]] = set()
        for i in range(0, len(new_vms), _CHUNK):
            have_vms.update(
                (r.host, r.vm)
                for r in conn.execute(sql.KNOWN_VMS, sql.rows("vms", new_vms[i : i + _CHUNK]))
            )
        for i in range(0, len(new_hosts), _CHUNK):
            have_hosts.update(
                conn.execute(sql.KNOWN_HOSTS, {"hosts": new_hosts[i : i + _CHUNK]}).scalars()
            )
        if rows := [{"host": h, "available": True} for h in new_hosts if h not in have_hosts]:
            conn.execute(hosts.insert(), rows)
        if rows := [
            {"host": h, "vm": v, "available": True} for h, v in new_vms if (h, v) not in have_vms
        ]:
            conn.execute(vms.insert(), rows)
        conn.execute(keys.insert(), [{"host": h, "vm": v, "policy": p} for h, v, p in new])

    # -- mapping -------------------------------------------------------------------
    def _bump(self, conn: sa.Connection) -> int:
        conn.execute(mapping_version.update().values(version=mapping_version.c.version + 1))
        return int(conn.execute(sa.select(mapping_version.c.version)).scalar_one())

    def _unbump(self, conn: sa.Connection) -> None:
        conn.execute(mapping_version.update().values(version=mapping_version.c.version - 1))

    def add_keys(
        self, conn: sa.Connection, wanted: list[tuple[str, str, str]]
    ) -> tuple[list[tuple[str, str, str]], MappingDelta | None]:
        """Add those of ``wanted`` (keys found missing) the mapping still lacks, within
        ``conn``'s transaction; returns them and their one change (None: none). One
        writer of the mapping at a time (the version's row lock, taken first), then a
        second look: another transaction may have added some meanwhile."""
        version = self._bump(conn)
        new = self._missing_keys(conn, wanted)
        if not new:  # nothing new after all: give the version back
            self._unbump(conn)
            return [], None
        self._insert_keys(conn, new)
        return new, _keys_delta(version, new)

    def mapping_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(mapping_version.c.version)).scalar_one())

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

    def all_keys(self) -> list[Key]:
        """Every key in the mapping, in first-appearance order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(keys.c.host, keys.c.vm, keys.c.policy).order_by(keys.c.seq)
            ).all()
        return [Key(host=r.host, vm=r.vm, policy=r.policy) for r in rows]

    # -- retiring idle keys, guarded against events racing into them ----------------
    def retire_keys(
        self,
        candidates: Sequence[Key],
        delete_queues: Callable[[list[Key]], list[Key]],
        fence: Fence | None = None,
    ) -> Retired:
        """Retire those of ``candidates`` (at most a few hundred) that no event waits
        for: ``delete_queues`` deletes their queues and returns the keys whose queue is
        gone, and their rows go in the same transaction, under one mapping version.

        The guard is the key's row. A request reads its keys FOR SHARE before it stores
        its events, and publishes only after it committed; this transaction locks the
        rows FOR UPDATE (skipping any a request holds) and keeps them locked while the
        queues are deleted. So a request either committed before — its events are
        pending or queued, and the key stays — or reads after this commits, finds the
        key gone, adds it again and declares its queue anew. No event of a pending or
        queued row is ever in a queue being deleted. (On SQLite the write lock, taken
        first, does the same.) The version's row is locked first, as a request that
        adds keys locks it last, so the two never wait on each other in a cycle.

        With ``fence`` (a dispatcher shard's: :mod:`shared.fencing`), the transaction
        first checks that this process still holds the hosts of ``candidates``: one
        that lost a partition while it stalled raises :class:`~shared.errors.LeaseLost`
        before it deletes any queue (``delete_queues`` is not called, nothing changes),
        so it never deletes a queue another shard consumes. Locks are taken in the order
        lease rows (the fence), version row, key rows; a request never locks a lease row
        and a take of a partition updates one lease row only, so no cycle forms. Without
        it (a single dispatcher) the transaction is unfenced, as before shards."""
        wanted = list(dict.fromkeys((k.host, k.vm, k.policy) for k in candidates))
        if not wanted:
            return Retired([], [], [], None)
        with self.engine.begin() as conn:
            write_lock_first(conn)
            if fence is not None:
                fence.check(conn, {h for h, _, _ in wanted})
            version = self._bump(conn)
            sql = statements.batch(conn.dialect.name)
            among = sql.rows("keys", wanted)
            present = {(r.host, r.vm, r.policy) for r in conn.execute(sql.KEYS_AMONG, among)}
            locked = {(r.host, r.vm, r.policy) for r in conn.execute(sql.RETIRING_KEYS, among)}
            waiting = {(r.host, r.vm, r.policy) for r in conn.execute(sql.KEYS_WAITING, among)}
            todo = [k for k in wanted if k in locked and k not in waiting]
            gone = delete_queues([_key(k) for k in todo]) if todo else []
            retired = [(k.host, k.vm, k.policy) for k in gone]
            delta = None
            if retired:
                conn.execute(keys.delete().where(_among_keys(retired)))
                delta = MappingDelta(
                    version=version, op="keys_retired", host=retired[0][0], keys=retired
                )
            else:  # nothing retired: give the version back
                conn.execute(mapping_version.update().values(version=mapping_version.c.version - 1))
        done = set(retired)
        return Retired(
            retired=[_key(k) for k in retired],
            absent=[_key(k) for k in wanted if k not in present],
            kept=[_key(k) for k in wanted if k in present and k not in done],
            delta=delta,
        )

    # -- removing a VM, guarded against events racing into it ----------------------
    def mark_removing(self, host: str, vm: str, now: float, marks_after: float) -> bool:
        """Mark the VM as being removed (at ``now``): events for it are refused from
        then on, by every producer process. False if there is no such VM; raises
        :class:`RemovalUnderway` if another removal's mark (set after ``marks_after``)
        is on it."""
        with self.engine.begin() as conn:
            res = conn.execute(
                vms.update()
                .where(
                    vms.c.host == host,
                    vms.c.vm == vm,
                    sa.or_(vms.c.removing_since.is_(None), vms.c.removing_since <= marks_after),
                )
                .values(removing_since=now)
            )
            if res.rowcount == 1:
                return True
            exists = conn.execute(
                sa.select(vms.c.seq).where(vms.c.host == host, vms.c.vm == vm)
            ).first()
        if exists:
            raise RemovalUnderway(host, vm)
        return False

    def unmark_removing(self, host: str, vm: str, mark: float) -> None:
        """The removal (of ``mark``) was refused: events for the VM are accepted again."""
        with self.engine.begin() as conn:
            conn.execute(
                vms.update()
                .where(vms.c.host == host, vms.c.vm == vm, vms.c.removing_since == mark)
                .values(removing_since=None)
            )

    def remove_marked_vm(
        self, host: str, vm: str, mark: float, pending_after: float
    ) -> MappingDelta:
        """Remove the VM marked by :meth:`mark_removing` (``mark``), unless it has
        unfinished events: queued or in flight, or pending since after ``pending_after``
        (accepted by a request that may still be publishing them; older pending rows are
        leftovers of a producer that died before the broker confirmed, deleted here).
        Counted in the transaction that deletes, after the mark: an event the count does
        not see cannot be accepted any more. Raises :class:`UnfinishedEvents`, or
        :class:`RemovalUnderway` if the mark is no longer this removal's."""
        with self.engine.begin() as conn:
            res = conn.execute(
                vms.delete().where(vms.c.host == host, vms.c.vm == vm, vms.c.removing_since == mark)
            )
            if res.rowcount == 0:
                raise RemovalUnderway(host, vm)
            count = int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(events)
                    .where(
                        events.c.host == host,
                        events.c.vm == vm,
                        sa.or_(
                            events.c.status.in_(_UNFINISHED),
                            sa.and_(
                                events.c.status == Status.PENDING.value,
                                events.c.accepted_at > pending_after,
                            ),
                        ),
                    )
                ).scalar_one()
            )
            if count:
                raise UnfinishedEvents(count)  # rolls the delete back
            return self._forget_vm(conn, host, vm)

    def remove_vm(self, host: str, vm: str) -> MappingDelta | None:
        """Remove the VM, unguarded (the producer goes through :meth:`mark_removing`)."""
        with self.engine.begin() as conn:
            res = conn.execute(vms.delete().where(vms.c.host == host, vms.c.vm == vm))
            if res.rowcount == 0:
                return None
            return self._forget_vm(conn, host, vm)

    def _forget_vm(self, conn: sa.Connection, host: str, vm: str) -> MappingDelta:
        conn.execute(keys.delete().where(keys.c.host == host, keys.c.vm == vm))
        conn.execute(
            events.delete().where(
                events.c.host == host,
                events.c.vm == vm,
                events.c.status == Status.PENDING.value,
            )
        )
        return MappingDelta(version=self._bump(conn), op="vm_removed", host=host, vm=vm)

    def snapshot(self) -> MappingSnapshot:
        with self.engine.connect() as conn:
            version = int(conn.execute(sa.select(mapping_version.c.version)).scalar_one())
            host_rows = conn.execute(sa.select(hosts).order_by(hosts.c.seq)).all()
            vm_rows = conn.execute(sa.select(vms).order_by(vms.c.seq)).all()
            key_rows = conn.execute(sa.select(keys).order_by(keys.c.seq)).all()
            queued = {
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
                    queued=queued.get((k.host, k.vm, k.policy), 0)
                )
        return MappingSnapshot(version=version, hosts=out)


def _key(k: tuple[str, str, str]) -> Key:
    return Key.model_construct(host=k[0], vm=k[1], policy=k[2])


def _among_keys(wanted: list[tuple[str, str, str]]) -> sa.ColumnElement[bool]:
    return sa.tuple_(keys.c.host, keys.c.vm, keys.c.policy).in_(wanted)


def _keys_delta(version: int, new: list[tuple[str, str, str]]) -> MappingDelta:
    """One key: the single-key form every dispatcher reads; more: ``keys_added``."""
    if len(new) == 1:
        host, vm, policy = new[0]
        return MappingDelta(version=version, op="key_added", host=host, vm=vm, policy=policy)
    return MappingDelta(version=version, op="keys_added", host=new[0][0], keys=new)
