"""The event ledger: every event's status, shared by all services.

Every state change is one conditional UPDATE, so the ledger — not timing — decides races
between redeliveries:

    pending --confirm--> queued --dispatcher--> dispatched --worker claim--> running
        --> succeeded | failed
    pending | queued --cancel--> cancelled

A cancel and the dispatcher's mark race for an event not yet dispatched: whichever
UPDATE comes first wins, and the other finds it no longer ``pending|queued``. A cancelled
event is never dispatched, hence never claimed.

A claim is a lease: a worker may claim a ``dispatched`` event, or take over a
``running`` one whose holder let its lease expire (it died, or lost the ledger); each
claim gets a new, larger fencing token. The holder renews the lease while the action
runs, and only the holder of the current token may renew it or record the outcome. So a
second task message for one event is harmless while the first holder lives, and a dead
holder's event is taken over instead of stranded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shared import clock, coalescing, named_budget, statements
from shared.db import dialect_insert, events, keys, vms, write_lock_first
from shared.errors import Conflict, VmRemoved
from shared.fencing import Fence
from shared.lease import Lease, holder_paused
from shared.models import FINISHED, IN_FLIGHT, MappingDelta, Status, VmEventMessage
from shared.named_budget import Limited, NamedBudget, NamedUse
from shared.rows import event_message as _message
from shared.rows import event_row as _row
from shared.statements import NO_LIMIT


class Claim(Enum):
    CLAIMED = "claimed"  # run the action
    FINISHED = "finished"  # already done: no second effect, re-announce the completion
    HELD = "held"  # another task message for this event is running it: do nothing
    UNKNOWN = "unknown"  # no such event (or not yet dispatched)
    EXHAUSTED = "exhausted"  # claimed max_attempts times already: now failed, not run


@dataclass(frozen=True)
class ClaimResult:
    outcome: Claim
    #: CLAIMED: this claim's fencing token. It grows with every claim of the event; only
    #: its holder may renew the lease or record the outcome, and the driver passes it on
    #: so that a cloud API can refuse a stale holder
    token: int = 0
    #: CLAIMED: which attempt this claim is (1 for the first run of the event)
    attempt: int = 0
    #: CLAIMED: the event as it was accepted (what the worker runs, whatever the task
    #: message says), read in the claim's transaction
    event: VmEventMessage | None = None


@dataclass(frozen=True)
class Accepted:
    #: events to publish now (new ones, and re-posts of ones never confirmed)
    to_publish: list[VmEventMessage]
    #: ids in request order; a coalesced event's is the id of the event that answers it
    ids: list[str]
    #: ids this call inserted: the only ones its caller may discard on failure
    inserted: list[str]
    #: for each of ``ids``, whether the event was coalesced into another
    coalesced: list[bool]


@dataclass(frozen=True)
class Cancel:
    """What :meth:`EventLedger.cancel` found."""

    #: the event's status after the call; None: no such event
    status: Status | None
    #: this call cancelled it (it was pending or queued)
    now: bool = False


@dataclass(frozen=True)
class InFlight:
    id: str
    host: str
    vm: str
    policy: str
    status: Status
    action: str = ""
    #: the VM's group the event counts against (None: none)
    group: str | None = None


class EventLedger:
    engine: Engine

    #: shared.mapping_store.MappingStore's (a declaration only: the Store has both)
    add_keys: Callable[
        [sa.Connection, list[tuple[str, str, str]]],
        tuple[list[tuple[str, str, str]], MappingDelta | None],
    ]

    # -- producer: accepting events ------------------------------------------------
    def record_pending(
        self,
        conn: sa.Connection,
        batch: Sequence[VmEventMessage],
        coalesce: Collection[str] = (),
    ) -> Accepted:
        """Record ``batch`` as pending, within the caller's transaction ``conn`` (the
        producer's :meth:`~shared.mapping_store.MappingStore.admit`). Ids seen before are
        not stored twice: a re-post of a confirmed (or cancelled) event is accepted without
        publishing again, a re-post of one never confirmed (the producer died before the
        broker confirmed) is published again. Raises :class:`Conflict` if a known id comes
        with other content. A new event whose id is in ``coalesce`` is answered with an
        event waiting for the same host, VM, policy and action, if there is one
        (:mod:`shared.coalescing`); a pending one is then published again, as a re-post."""
        ids = [e.id for e in batch]
        known = {
            r.id: r for r in conn.execute(statements.batch(conn.dialect.name).KNOWN, {"ids": ids})
        }
        fresh: list[VmEventMessage] = []
        publishable: list[VmEventMessage] = []  # new ones and re-posts, request order
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
                publishable.append(e)
            elif old.status == Status.PENDING:
                publishable.append(e)
        stored = coalescing.store(conn, fresh, coalesce)
        # a coalesced event is not published; where the event answering it is pending
        # and not of this request, that one is, in its place
        again = {e.id: e for e in stored.republish}
        to_publish: dict[str, VmEventMessage] = {}
        for e in publishable:
            if e.id not in stored.joined:
                to_publish.setdefault(e.id, e)
            elif (into := again.pop(stored.joined[e.id].id, None)) is not None:
                to_publish.setdefault(into.id, into)
        answers = [stored.joined[i].id if i in stored.joined else i for i in ids]
        return Accepted(
            to_publish=list(to_publish.values()),
            ids=answers,
            inserted=stored.inserted,
            coalesced=[i in stored.joined for i in ids],
        )

    def confirm(self, batch: Sequence[VmEventMessage]) -> None:
        """The broker confirmed these: pending -> queued. A row missing by now (a
        concurrent request for the same id failed and discarded it) is written again:
        its message is in the broker, so the event is accepted. Two requests confirming
        the same missing id at once may both find it missing: the second insert then
        does nothing (``ON CONFLICT DO NOTHING``), and that request answers as a re-post
        of a known id does."""
        ids = [e.id for e in batch]
        if not ids:
            return
        with self.engine.begin() as conn:
            sql = statements.batch(conn.dialect.name)
            conn.execute(sql.CONFIRM, {"ids": ids})
            present = set(conn.execute(sql.PRESENT, {"ids": ids}).scalars())
            missing = [e for e in batch if e.id not in present]
            if missing:
                conn.execute(_insert_new(conn), [_row(e, Status.QUEUED) for e in missing])

    def discard(self, ids: Iterable[str]) -> None:
        """Publishing failed: forget these pending events (the client got an error)."""
        ids = list(ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                events.delete().where(events.c.id.in_(ids), events.c.status == Status.PENDING.value)
            )

    def cancel(self, event_id: str) -> Cancel:
        """pending|queued -> cancelled, in one conditional UPDATE: refused (nothing
        changes) for an event dispatched already, whatever happens to it next. Needs no
        dispatcher or worker: the cancelled event's message is skipped when it reaches the
        dispatcher, whose mark finds it cancelled. Cancelling a cancelled event again
        finds it so."""
        if not _storable(event_id):
            return Cancel(None)
        with self.engine.begin() as conn:
            if conn.execute(statements.CANCEL, {"event_id": event_id}).rowcount == 1:
                return Cancel(Status.CANCELLED, now=True)
            row = conn.execute(statements.STATUS, {"event_id": event_id}).first()
        return Cancel(None if row is None else Status(row.status))

    def get(self, event_id: str) -> dict[str, Any] | None:
        """The event's row; None if there is none (an id the ledger could not store
        included: it cannot be one)."""
        if not _storable(event_id):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(events).where(events.c.id == event_id)).first()
        return None if row is None else dict(row._mapping)

    def event(self, event_id: str) -> VmEventMessage | None:
        """The event as it was accepted: what a worker runs, whatever a task message says."""
        row = self.get(event_id)
        return None if row is None else _message(row)

    # -- dispatcher ----------------------------------------------------------------
    def take_lease(self, lease: Lease, paused: bool | None = None) -> bool:
        """Take or renew ``lease``; False while another holder's has not expired. A renewal
        is one conditional UPDATE; the lease's row is created only when that finds none.
        ``paused``, if given, is recorded with it (see :meth:`lease_paused`)."""
        with self.engine.begin() as conn:
            if lease.take(conn, paused):
                return True
        with contextlib.suppress(sa.exc.IntegrityError), self.engine.begin() as conn:
            lease.create(conn)  # a concurrent creator wins the insert: fine
        with self.engine.begin() as conn:
            return lease.take(conn, paused)

    def lease_paused(self, name: str) -> bool:
        """Whether the live holder of lease ``name`` said it is paused at its last
        renewal: for ``dispatcher``, whether the active dispatcher is paused. False while
        no one holds it."""
        with self.engine.connect() as conn:
            return holder_paused(conn, name)

    def now(self) -> float:
        """The ledger's time (:mod:`shared.clock`), for what is shown: every lease is
        stamped and judged inside its own statement."""
        with self.engine.connect() as conn:
            return clock.read(conn)

    def release_lease(self, lease: Lease) -> None:
        with self.engine.begin() as conn:
            lease.release(conn)

    def mark_dispatched_many(
        self,
        event_ids: Sequence[str],
        dispatch_id: str,
        fence: Fence | None = None,
        hosts: Collection[str] = (),
        named: NamedBudget | None = None,
    ) -> dict[str, Status | Limited | None]:
        """pending|queued -> dispatched, for a batch in one transaction. Returns id -> the
        status it had before: ``QUEUED`` for every event this call moved (so the caller
        can tell a duplicate), ``None`` for an unknown id. With ``fence`` (the
        dispatcher's lease, which the check renews), the same transaction first checks it
        for the events' ``hosts`` and raises :class:`LeaseLost`, changing nothing, if
        another process holds it: only the lease holder dispatches.

        ``named`` (a dispatcher shard's, whose own counts see only its hosts): the named
        limits to keep across the whole ledger. After the fence, each limit the batch
        touches is locked and counted, and the events are admitted in pick order while
        under it (:mod:`shared.named_budget`); a refused one stays queued and comes back
        :class:`~shared.named_budget.Limited`. Only a batch carrying limited work pays
        (a lock per limit it touches, a count per kind); without ``named`` — a single
        dispatcher — the SQL is the same as ever."""
        if not event_ids:
            return {}
        refused: dict[str, Limited] = {}
        with self.engine.begin() as conn:
            if fence is not None:
                fence.check(conn, hosts)
            sql = statements.batch(conn.dialect.name)
            marking = list(event_ids)
            if named is not None:
                marking, refused = named_budget.admit(conn, named, event_ids)
            if marking:
                conn.execute(sql.DISPATCH, {"ids": marking, "p_dispatch_id": dispatch_id})
            rows = conn.execute(sql.STATUSES, {"ids": list(event_ids)}).all()
        before: dict[str, Status | Limited | None] = dict.fromkeys(event_ids)
        for r in rows:
            moved = r.status == Status.DISPATCHED.value and r.dispatch_id == dispatch_id
            before[r.id] = Status.QUEUED if moved else Status(r.status)
        before.update(refused)
        return before

    def named_in_flight(self) -> NamedUse:
        """The named limits' use across the whole ledger — events in flight per action,
        VMs with an event in flight per group — in two grouped counts over the rows in
        flight (about ``MAX_PARALLEL`` of them): what a dispatcher shard compares with
        its own use to learn the other shards'."""
        with self.engine.connect() as conn:
            return named_budget.in_flight_use(conn)

    def overdue(
        self, resend_after: float, limit: int = 100, expired_claims: bool = True
    ) -> list[VmEventMessage]:
        """In-flight events whose task message may be lost, for the sweeper: dispatched
        and unclaimed for ``resend_after`` seconds since their task was last sent, or —
        with ``expired_claims`` — running with an expired claim (the holder died) and no
        task sent since then. Judged by the ledger's clock, as the claims were stamped."""
        last_sent = events.c.dispatched_at
        expired = sa.func.coalesce(events.c.lease_expires_at, 0.0)
        long_ago = clock.NOW - resend_after
        overdue = sa.and_(events.c.status == Status.DISPATCHED.value, last_sent < long_ago)
        if expired_claims:
            overdue = sa.or_(
                overdue,
                sa.and_(
                    events.c.status == Status.RUNNING.value,
                    expired < clock.NOW,
                    sa.or_(last_sent < expired, last_sent < long_ago),
                ),
            )
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events).where(overdue).order_by(last_sent).limit(limit)
            ).all()
        return [_message(r._mapping) for r in rows]

    def mark_resent(
        self,
        event_ids: Sequence[str],
        dispatch_id: str,
        fence: Fence | None = None,
        hosts: Collection[str] = (),
    ) -> list[str]:
        """Record that a task is sent again for these (still in flight) events; returns
        those it applies to. With ``fence``, fenced as :meth:`mark_dispatched_many`."""
        if not event_ids:
            return []
        with self.engine.begin() as conn:
            if fence is not None:
                fence.check(conn, hosts)
            still = list(
                conn.execute(
                    sa.select(events.c.id).where(
                        events.c.id.in_(event_ids),
                        events.c.status.in_([s.value for s in IN_FLIGHT]),
                    )
                ).scalars()
            )
            conn.execute(
                events.update()
                .where(events.c.id.in_(still))
                .values(dispatch_id=dispatch_id, dispatched_at=clock.NOW)
            )
        return still

    def finished_among(
        self, event_ids: Sequence[str], finished_for: float | None = None
    ) -> list[str]:
        """Those of ``event_ids`` that have succeeded or failed (at least
        ``finished_for`` seconds ago by the ledger's clock, when given)."""
        if not event_ids:
            return []
        params = {"ids": list(event_ids), "age": finished_for}
        with self.engine.connect() as conn:
            sql = statements.batch(conn.dialect.name)
            query = sql.FINISHED_AMONG if finished_for is None else sql.FINISHED_BEFORE
            return list(conn.execute(query, params).scalars())

    def status_of(self, event_id: str) -> Status | None:
        if not _storable(event_id):
            return None
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

    def queued_by_key(self) -> dict[tuple[str, str, str], int]:
        """Events accepted and not yet dispatched, per (host, vm, policy)."""
        key = (events.c.host, events.c.vm, events.c.policy)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(*key, sa.func.count().label("n"))
                .where(events.c.status == Status.QUEUED.value)
                .group_by(*key)
            ).all()
        return {(r.host, r.vm, r.policy): int(r.n) for r in rows}

    def unfinished_of(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], str]:
        """For each (host, vm, policy) with an event accepted and not finished, one such
        event's id: what the monitoring asks before raising an event for a key (one at a
        time per VM and policy, as a work queue takes a key once however often it is
        added). ``pending`` rows are not accepted yet and do not count."""
        if not keys:
            return {}
        unfinished = [s.value for s in (Status.QUEUED, *IN_FLIGHT)]
        found: dict[tuple[str, str, str], str] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 300):
                rows = conn.execute(
                    sa.select(events.c.host, events.c.vm, events.c.policy, events.c.id).where(
                        sa.tuple_(events.c.host, events.c.vm, events.c.policy).in_(
                            keys[i : i + 300]
                        ),
                        events.c.status.in_(unfinished),
                    )
                ).all()
                for r in rows:
                    found.setdefault((r.host, r.vm, r.policy), r.id)
        return found

    def in_flight(self) -> list[InFlight]:
        """Events dispatched and not finished: what a restarted dispatcher must count."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    events.c.id,
                    events.c.host,
                    events.c.vm,
                    events.c.policy,
                    events.c.status,
                    events.c.action,
                    events.c.grp,
                ).where(events.c.status.in_([s.value for s in IN_FLIGHT]))
            ).all()
        return [
            InFlight(r.id, r.host, r.vm, r.policy, Status(r.status), r.action, r.grp) for r in rows
        ]

    # -- dead letters (the admin API) -------------------------------------------------
    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Events that ended failed out of attempts or time, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events)
                .where(events.c.dead_at.is_not(None))
                .order_by(events.c.dead_at.desc())
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def redrive(self, event_id: str) -> VmEventMessage | None:
        """:meth:`redrive_keyed`'s event."""
        return self.redrive_keyed(event_id)[0]

    def redrive_keyed(self, event_id: str) -> tuple[VmEventMessage | None, MappingDelta | None]:
        """A dead-lettered event goes back to ``queued`` with its attempts reset, for its
        caller to publish again; None if it is not dead-lettered (nothing changes).
        Raises :class:`VmRemoved` (nothing changes) if its VM is no longer in the
        mapping: no dispatcher would consume that key's queue, and publishing would
        declare it again. Decided in the transaction that queues the event, with the
        VM's row read FOR SHARE (PostgreSQL) or under the write lock (SQLite): a removal
        deleting the VM either went first (the row is gone) or waits for this
        transaction and then counts the event unfinished, and refuses. A key retired
        meanwhile (idle; its VM still there) is added to the mapping again, as a new
        event's would be: the change comes back with the event, for the caller to
        announce. The key's row is read FOR SHARE too, so a retirement of it either
        went first or waits and then finds the event queued."""
        if not _storable(event_id):
            return None, None
        with self.engine.begin() as conn:
            write_lock_first(conn)  # no removal interleaves with the reads below
            dead = sa.and_(events.c.id == event_id, events.c.dead_at.is_not(None))
            found = conn.execute(
                sa.select(events.c.host, events.c.vm, events.c.policy).where(dead)
            ).first()
            if found is None:
                return None, None
            host, vm, policy = found
            vm_row = conn.execute(
                sa.select(vms.c.seq)
                .where(vms.c.host == host, vms.c.vm == vm)
                .with_for_update(read=True)
            ).first()
            if vm_row is None:
                raise VmRemoved(event_id, host, vm, policy)
            key = conn.execute(
                sa.select(keys.c.seq)
                .where(keys.c.host == host, keys.c.vm == vm, keys.c.policy == policy)
                .with_for_update(read=True)
            ).first()
            delta = None if key is not None else self.add_keys(conn, [(host, vm, policy)])[1]
            res = conn.execute(
                events.update()
                .where(dead)
                .values(
                    status=Status.QUEUED.value,
                    # back among the waiting events, not coalescing: another coalescing
                    # one may wait for the same action now
                    coalescing=False,
                    dead_at=None,
                    attempts=0,
                    error=None,
                    worker=None,
                    dispatch_id=None,
                    dispatched_at=None,
                    started_at=None,
                    finished_at=None,
                )
            )
            if res.rowcount != 1:  # a concurrent re-drive took it (and announces the key)
                return None, None
            queued = conn.execute(sa.select(events).where(events.c.id == event_id)).one()
        return _message(queued._mapping), delta

    def undo_redrive(self, event_id: str, reason: str) -> None:
        """Publishing a re-driven event failed: dead-lettered again, as it was."""
        with self.engine.begin() as conn:
            conn.execute(
                events.update()
                .where(events.c.id == event_id, events.c.status == Status.QUEUED.value)
                .values(
                    status=Status.FAILED.value,
                    dead_at=clock.NOW,
                    error=reason,
                    finished_at=clock.NOW,
                )
            )

    # -- worker --------------------------------------------------------------------
    def claim(
        self,
        event_id: str,
        dispatch_id: str,
        worker: str,
        lease_seconds: float,
        max_attempts: int | None = None,
    ) -> ClaimResult:
        """dispatched -> running, or running -> running for a new holder once the last
        holder's lease has expired; the claim holds for ``lease_seconds`` unless renewed
        (:meth:`renew`). Both are the ledger's time (:mod:`shared.clock`), never the
        worker's. Each claim is an attempt: with ``max_attempts``, an event claimed that
        often already ends ``failed`` (and dead-lettered) instead, in the same
        transaction, so an action that kills its worker every time ends."""
        params = {
            "event_id": event_id,
            "max_attempts": NO_LIMIT if max_attempts is None else max_attempts,
            "p_dispatch_id": dispatch_id,
            "p_worker": worker,
            "lease_seconds": lease_seconds,
        }
        with self.engine.begin() as conn:
            won = conn.execute(statements.CLAIM, params).first()
            if won is not None:
                return ClaimResult(
                    Claim.CLAIMED, int(won.fence), int(won.attempts), _message(won._mapping)
                )
            if max_attempts is not None:
                params["p_error"] = (
                    f"gave up after {max_attempts} attempts: the action never finished "
                    "(its worker died, lost the ledger or was cut off each time)"
                )
                if conn.execute(statements.EXHAUST, params).rowcount == 1:
                    return ClaimResult(Claim.EXHAUSTED)
            row = conn.execute(statements.STATUS, params).first()
        if row is None:
            return ClaimResult(Claim.UNKNOWN)
        if Status(row.status) in FINISHED:
            return ClaimResult(Claim.FINISHED)
        if row.status == Status.RUNNING.value:
            return ClaimResult(Claim.HELD)
        return ClaimResult(Claim.UNKNOWN)

    def renew(self, event_id: str, token: int, lease_seconds: float) -> bool:
        """Extend the claim of ``token`` to ``lease_seconds`` from now (the ledger's
        time); False if that claim is over (the event finished, or another holder took it
        over after the lease expired)."""
        params = {"event_id": event_id, "token": token, "lease_seconds": lease_seconds}
        with self.engine.begin() as conn:
            res = conn.execute(statements.RENEW, params)
        return bool(res.rowcount == 1)

    def finish(
        self,
        event_id: str,
        token: int,
        ok: bool,
        error: str | None,
        dead: bool = False,
    ) -> bool:
        """running -> succeeded | failed, by the holder of claim ``token`` only; False
        (nothing changes) for a stale holder. ``dead``: the event failed for a reason an
        operator should look at (its time limit): it is listed as dead-lettered."""
        status = Status.SUCCEEDED if ok else Status.FAILED
        params = {
            "event_id": event_id,
            "token": token,
            "p_status": status.value,
            "p_error": error,
            "p_dead": dead,
        }
        with self.engine.begin() as conn:
            res = conn.execute(statements.FINISH, params)
        return bool(res.rowcount == 1)


def _storable(text: str) -> bool:
    """Whether the ledger can hold ``text``: PostgreSQL refuses a NUL in text (SQLite
    would store it), and neither takes a lone surrogate. An id it cannot hold is no
    event's, on either backend."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _insert_new(conn: sa.Connection) -> Any:
    """An insert of event rows that skips an id already there (both dialects say
    ``ON CONFLICT (id) DO NOTHING``)."""
    return dialect_insert(conn)(events).on_conflict_do_nothing(index_elements=[events.c.id])
