"""Storing a request's new events, some of which coalesce (see docs/design.md §6).

A coalescing event is answered with an event that already waits for the same (host, VM,
policy, action) — ``pending`` or ``queued``, in the ledger or earlier in the same request
— instead of being stored as a second copy. The database decides the race between two
requests: a unique partial index (``ux_events_coalesce``, :data:`shared.db.COALESCING`)
admits one coalescing event per (host, VM, policy, action) not yet dispatched, and the
insert of the second one does nothing on that conflict; it then reads the first one's row
and is answered with it. On SQLite the producer's transaction holds the write lock from
its start, so there the first read already sees the other request's row.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from shared.db import COALESCING, dialect_insert, events
from shared.models import UNDISPATCHED, Status, VmEventMessage
from shared.rows import event_message, event_row

#: what a coalescing event must match in the waiting one
Match = tuple[str, str, str, str]
#: (host, vm, policy, action) tuples looked up per statement
_CHUNK = 200
#: tries to insert or find the waiting event, when each try finds the other gone
_TRIES = 3


@dataclass
class Stored:
    """What :func:`store` did with a request's new events."""

    #: ids this call inserted
    inserted: list[str] = field(default_factory=list)
    #: the id of each coalesced event -> the event that answers it
    joined: dict[str, VmEventMessage] = field(default_factory=dict)
    #: the waiting events that answer some and are still pending in the ledger (their
    #: request may still fail): published again, as a re-post of a pending id is
    republish: list[VmEventMessage] = field(default_factory=list)


def match(e: VmEventMessage) -> Match:
    return (e.host, e.vm, e.policy, e.action.value)


def store(
    conn: sa.Connection, fresh: Sequence[VmEventMessage], coalesce: Collection[str]
) -> Stored:
    """Insert ``fresh`` (events the ledger does not know, unique ids) as pending, those
    whose id is in ``coalesce`` coalescing, unless they join a waiting event."""
    out = Stored()
    waiting: dict[Match, VmEventMessage] = {}
    plain: list[VmEventMessage] = []
    candidates: list[VmEventMessage] = []
    for e in fresh:
        m = match(e)
        if e.id in coalesce and m in waiting:
            out.joined[e.id] = waiting[m]
            continue
        waiting.setdefault(m, e)
        (candidates if e.id in coalesce else plain).append(e)
    if candidates:
        found = _waiting(conn, [match(e) for e in candidates])
        for e in list(candidates):
            if (there := found.get(match(e))) is not None:
                _join(out, e, there)
                candidates.remove(e)
    if plain:
        conn.execute(events.insert(), [event_row(e, Status.PENDING) for e in plain])
        out.inserted += [e.id for e in plain]
    for _ in range(_TRIES):
        if not candidates:
            break
        inserted = set(
            conn.execute(
                _insert_coalescing(conn).returning(events.c.id),
                [event_row(e, Status.PENDING, True) for e in candidates],
            ).scalars()
        )
        out.inserted += [e.id for e in candidates if e.id in inserted]
        lost = [e for e in candidates if e.id not in inserted]
        # another request's coalescing event won the index (its transaction committed
        # meanwhile): read it, now visible; gone already (dispatched)? insert again
        found = _waiting(conn, [match(e) for e in lost]) if lost else {}
        candidates = []
        for e in lost:
            if (there := found.get(match(e))) is not None:
                _join(out, e, there)
            else:
                candidates.append(e)
    if candidates:
        raise sa.exc.InvalidRequestError("coalescing events kept losing to events gone since")
    # an event of this request that joined the ledger's waiting one takes the events of
    # this request that joined it along
    for eid, into in list(out.joined.items()):
        while into.id in out.joined:
            into = out.joined[into.id]
        out.joined[eid] = into
    return out


def _join(out: Stored, e: VmEventMessage, there: tuple[VmEventMessage, Status]) -> None:
    message, status = there
    out.joined[e.id] = message
    if status is Status.PENDING and all(m.id != message.id for m in out.republish):
        out.republish.append(message)


def _waiting(
    conn: sa.Connection, matches: list[Match]
) -> dict[Match, tuple[VmEventMessage, Status]]:
    """For each of ``matches``, the event not yet dispatched that a coalescing event with
    it joins: the coalescing one if there is one, else the first accepted."""
    cols = (events.c.host, events.c.vm, events.c.policy, events.c.action)
    unique = list(dict.fromkeys(matches))
    found: dict[Match, tuple[VmEventMessage, Status]] = {}
    for i in range(0, len(unique), _CHUNK):
        rows = conn.execute(
            sa.select(events)
            .where(
                sa.tuple_(*cols).in_(unique[i : i + _CHUNK]),
                events.c.status.in_([s.value for s in UNDISPATCHED]),
            )
            .order_by(events.c.coalescing.desc(), events.c.accepted_at, events.c.id)
        ).all()
        for r in rows:
            m = (r.host, r.vm, r.policy, r.action)
            if m not in found:
                found[m] = (event_message(r._mapping), Status(r.status))
    return found


def _insert_coalescing(conn: sa.Connection) -> Any:
    """An insert of coalescing rows that does nothing for one that would be a second
    coalescing event waiting with the same (host, VM, policy, action)."""
    return dialect_insert(conn)(events).on_conflict_do_nothing(
        index_elements=[events.c.host, events.c.vm, events.c.policy, events.c.action],
        index_where=COALESCING,
    )
