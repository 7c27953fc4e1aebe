"""Named limits kept across dispatcher shards: a shared budget in the ledger.

The invariant (docs/design.md §8): never more actions of a kind in flight than
``ACTION_LIMITS`` allows, nor more of a group's VMs in action than its budget — also
across a dispatcher kill. A single dispatcher keeps it in its pure core
(:mod:`scheduler.dispatcher.limits`), which sees every event in flight. A dispatcher shard
sees only its own hosts' events, so N shards counting alone could together run N times a
limit; the transaction that marks a shard's batch dispatched
(:meth:`~shared.ledger.EventLedger.mark_dispatched_many` with a :class:`NamedBudget`)
checks the batch against the whole ledger instead (:func:`admit`):

1. after the fence, each limit the batch's undispatched events touch, in ascending
   ``(kind, name)`` order — as every shard takes them, so two never wait on each other in
   a cycle (all take their partition leases first, the fence's, in their own ascending
   order) — has its row of ``dispatcher_limit_locks`` locked: an upsert, whose
   ``ON CONFLICT DO UPDATE`` creates the row on a limit's first use and otherwise locks
   it, waiting for a shard holding it to commit. On SQLite the database's write lock,
   taken first, already serialises every writer (the upsert only keeps the rows);
2. then the limit's use is counted in the ledger: for an action, its events in flight
   (``dispatched``, ``running``); for a group, the distinct VMs with an event of the
   group in flight. PostgreSQL runs the ledger at READ COMMITTED, which gives each
   statement a snapshot of its own taken when it starts: a count made after the lock was
   granted sees every mark the shard that held the lock before had committed;
3. the batch's events are admitted in pick order while every limit they touch is under
   its value, counting each one admitted; only those are marked. An event of a VM with an
   event in flight already takes none of its group's budget (the VM is in action and
   counted), as in the pure core. An event behind a refused one on the same key is
   refused too, so that a key's order holds.

The refused ones come back :class:`Limited`: the dispatcher holds them again, first in
line, their keys waiting on that limit. Only a mark moves an event into flight, and each
mark of a limit's work holds the limit's row while it counts and marks, so whatever the
shards do at once, no limit is passed — provided every shard has the same limits. Each
shard checks against its own: a live change (``PUT /limits/named``) reaches every shard
at its next round (:mod:`scheduler.dispatcher.controls`), and until then the larger of
the old and new values may be in use (a shard for which an action has no limit yet marks
its events without the lock).

Cost: only batches carrying limited work pay — a lock per limit they touch and one count
per kind of limit (one statement for all their actions, one for all their groups, one for
their VMs in action); a single dispatcher passes no budget and runs the same SQL as
before. Shards serialise on a hot limit's row for the rest of their mark transaction, and
across shards a budget goes first come, first served.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import sqlalchemy as sa

from shared import statements
from shared.db import dialect_insert, dispatcher_limit_locks, events, write_lock_first
from shared.models import IN_FLIGHT, UNDISPATCHED

Kind = Literal["action", "group"]
#: a named limit's row: ``("action", "live_migrate")``, ``("group", "web")``
LimitKey = tuple[Kind, str]

_IN_FLIGHT = [s.value for s in IN_FLIGHT]
_UNDISPATCHED = frozenset(s.value for s in UNDISPATCHED)


class NamedLimitTable(Protocol):
    """The limits to keep (``scheduler.dispatcher.limits.NamedLimits`` is one): 0 means
    none."""

    def action_limit(self, action: str) -> int: ...

    def group_budget(self, group: str) -> int: ...


@dataclass(frozen=True)
class Work:
    """What a pick does, as far as the named limits go: its key, action and group (the
    event's, as accepted: the ledger's row says the same)."""

    host: str
    vm: str
    policy: str
    action: str
    group: str | None = None


@dataclass(frozen=True)
class NamedBudget:
    """The named limits a shard's batch must keep across every shard, and each of the
    batch's events' :class:`Work`, by id (an id without one is marked unchecked)."""

    limits: NamedLimitTable
    work: Mapping[str, Work]

    def needs(self, work: Work) -> list[LimitKey]:
        """The limits ``work`` counts against."""
        out: list[LimitKey] = []
        if self.limits.action_limit(work.action) > 0:
            out.append(("action", work.action))
        if work.group is not None and self.limits.group_budget(work.group) > 0:
            out.append(("group", work.group))
        return out

    def limit_of(self, key: LimitKey) -> int:
        kind, name = key
        if kind == "action":
            return self.limits.action_limit(name)
        return self.limits.group_budget(name)


@dataclass(frozen=True)
class Limited:
    """A pick the ledger refused to mark (not a :class:`~shared.models.Status`: the event
    is still queued): the named limit ``kind`` ``name`` had ``used`` of its ``limit`` in
    use across all shards when the batch was counted."""

    kind: Kind
    name: str
    used: int
    limit: int


@dataclass(frozen=True)
class NamedUse:
    """The named limits' use across the whole ledger: events in flight per action, VMs
    with an event in flight per group."""

    actions: dict[str, int]
    groups: dict[str, int]


def admit(
    conn: sa.Connection, budget: NamedBudget, event_ids: Sequence[str]
) -> tuple[list[str], dict[str, Limited]]:
    """In the caller's mark transaction, after its fence: which of ``event_ids`` (in pick
    order) to mark, and the refused ones with the limit that refused each (see the
    module's docstring). Ids of events not waiting to be dispatched are neither: the
    caller reports what they are."""
    touched = sorted(
        {need for i in event_ids if (w := budget.work.get(i)) for need in budget.needs(w)}
    )
    if not touched:
        return list(event_ids), {}
    write_lock_first(conn)
    for limit in touched:
        _lock(conn, limit)
    rows = conn.execute(statements.batch(conn.dialect.name).STATUSES, {"ids": list(event_ids)})
    statuses = {r.id: r.status for r in rows}
    waiting = [i for i in event_ids if statuses.get(i) in _UNDISPATCHED]
    use = _use(conn, touched)
    vms = {(w.host, w.vm) for i in waiting if (w := budget.work.get(i)) and w.group is not None}
    busy = _in_action(conn, vms)
    marked: list[str] = []
    refused: dict[str, Limited] = {}
    stopped: dict[tuple[str, str, str], Limited] = {}  # keys with a refused event
    for event_id in waiting:
        work = budget.work.get(event_id)
        if work is None:
            marked.append(event_id)
            continue
        key = (work.host, work.vm, work.policy)
        full = stopped.get(key) or _full(budget, work, use, busy)
        if full is not None:
            refused[event_id] = stopped[key] = full
            continue
        marked.append(event_id)
        for need in budget.needs(work):
            if need[0] == "action" or (work.host, work.vm) not in busy:
                use[need] += 1
        busy.add((work.host, work.vm))
    return marked, refused


def _full(
    budget: NamedBudget, work: Work, use: Counter[LimitKey], busy: set[tuple[str, str]]
) -> Limited | None:
    """The first limit ``work`` would pass, if any."""
    for need in budget.needs(work):
        if need[0] == "group" and (work.host, work.vm) in busy:
            continue  # its VM is in action: counted in its group already
        limit = budget.limit_of(need)
        if use[need] >= limit:
            return Limited(need[0], need[1], use[need], limit)
    return None


def _lock(conn: sa.Connection, key: LimitKey) -> None:
    """Lock the limit's row until the transaction ends, creating it on first use."""
    stmt = dialect_insert(conn)(dispatcher_limit_locks).values(kind=key[0], name=key[1])
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[dispatcher_limit_locks.c.kind, dispatcher_limit_locks.c.name],
            set_={"name": stmt.excluded.name},
        )
    )


def _use(conn: sa.Connection, keys: Sequence[LimitKey]) -> Counter[LimitKey]:
    """The ledger's use of each of ``keys`` now."""
    actions = [name for kind, name in keys if kind == "action"]
    groups = [name for kind, name in keys if kind == "group"]
    use: Counter[LimitKey] = Counter()
    if actions:
        rows = conn.execute(
            sa.select(events.c.action, sa.func.count())
            .where(events.c.status.in_(_IN_FLIGHT), events.c.action.in_(actions))
            .group_by(events.c.action)
        )
        use.update({("action", r[0]): int(r[1]) for r in rows})
    if groups:
        rows = conn.execute(_group_use(events.c.grp.in_(groups)))
        use.update({("group", r[0]): int(r[1]) for r in rows})
    return use


def _group_use(where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """Per group (among those ``where`` lets through), its distinct VMs in flight."""
    vms = (
        sa.select(events.c.host, events.c.vm, events.c.grp)
        .where(events.c.status.in_(_IN_FLIGHT), where)
        .distinct()
        .subquery()
    )
    return sa.select(vms.c.grp, sa.func.count()).group_by(vms.c.grp)


def _in_action(conn: sa.Connection, vms: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Those of ``vms`` with an event in flight."""
    if not vms:
        return set()
    rows = conn.execute(
        sa.select(events.c.host, events.c.vm)
        .where(
            events.c.status.in_(_IN_FLIGHT),
            sa.tuple_(events.c.host, events.c.vm).in_(sorted(vms)),
        )
        .distinct()
    )
    return {(r.host, r.vm) for r in rows}


def in_flight_use(conn: sa.Connection) -> NamedUse:
    """Every action's events in flight and every group's VMs in action, in the ledger."""
    actions = conn.execute(
        sa.select(events.c.action, sa.func.count())
        .where(events.c.status.in_(_IN_FLIGHT))
        .group_by(events.c.action)
    )
    groups = conn.execute(_group_use(events.c.grp.is_not(None)))
    return NamedUse(
        actions={r[0]: int(r[1]) for r in actions},
        groups={r[0]: int(r[1]) for r in groups},
    )
