"""The event ledger: every event's status, shared by all services.

Every state change is one conditional UPDATE, so the ledger — not timing — decides races
between redeliveries:

    pending --confirm--> queued --scheduler--> dispatched --worker claim--> running
        --> succeeded | failed

A worker may claim a ``dispatched`` event with any dispatch id, and re-claim a
``running`` one only with the dispatch id that claimed it (a redelivery of the same task
message). That is what makes a second task message for one event harmless.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shared.db import events
from shared.errors import Conflict
from shared.lease import Lease
from shared.models import FINISHED, IN_FLIGHT, UNDISPATCHED, Status, VmEventMessage


class Claim(Enum):
    CLAIMED = "claimed"  # run the action
    FINISHED = "finished"  # already done: no second effect, re-announce the completion
    HELD = "held"  # another task message for this event is running it: do nothing
    UNKNOWN = "unknown"  # no such event (or not yet dispatched)
    EXHAUSTED = "exhausted"  # claimed max_attempts times already: now failed, not run


@dataclass(frozen=True)
class Accepted:
    #: events to publish now (new ones, and re-posts of ones never confirmed)
    to_publish: list[VmEventMessage]
    #: ids in request order
    ids: list[str]
    #: ids this call inserted: the only ones its caller may discard on failure
    inserted: list[str]


@dataclass(frozen=True)
class InFlight:
    id: str
    host: str
    vm: str
    policy: str
    status: Status


class EventLedger:
    engine: Engine

    # -- producer: accepting events ------------------------------------------------
    def accept(self, batch: Sequence[VmEventMessage]) -> Accepted:
        """See :meth:`_accept`; a concurrent first post of the same id is retried, so it
        finds the other's row instead of failing on the primary key."""
        for attempt in range(3):
            try:
                return self._accept(batch)
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _accept(self, batch: Sequence[VmEventMessage]) -> Accepted:
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
                conn.execute(events.insert(), [_row(e, Status.PENDING) for e in fresh])
        return Accepted(to_publish=to_publish, ids=ids, inserted=[e.id for e in fresh])

    def confirm(self, batch: Sequence[VmEventMessage]) -> None:
        """The broker confirmed these: pending -> queued. A row missing by now (a
        concurrent request for the same id failed and discarded it) is written again:
        its message is in the broker, so the event is accepted."""
        ids = [e.id for e in batch]
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                events.update()
                .where(events.c.id.in_(ids), events.c.status == Status.PENDING.value)
                .values(status=Status.QUEUED.value)
            )
            present = set(
                conn.execute(sa.select(events.c.id).where(events.c.id.in_(ids))).scalars()
            )
            missing = [e for e in batch if e.id not in present]
            if missing:
                conn.execute(events.insert(), [_row(e, Status.QUEUED) for e in missing])

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

    def event(self, event_id: str) -> VmEventMessage | None:
        """The event as it was accepted: what a worker runs, whatever a task message says."""
        row = self.get(event_id)
        if row is None:
            return None
        return VmEventMessage(
            id=row["id"],
            host=row["host"],
            vm=row["vm"],
            policy=row["policy"],
            action=row["action"],
            payload=json.loads(row["payload"]),
            accepted_at=row["accepted_at"],
        )

    # -- scheduler -----------------------------------------------------------------
    def take_lease(self, lease: Lease, now: float) -> bool:
        """Take or renew ``lease``; False while another holder's has not expired. A renewal
        is one conditional UPDATE; the lease's row is created only when that finds none."""
        with self.engine.begin() as conn:
            if lease.take(conn, now):
                return True
        with contextlib.suppress(sa.exc.IntegrityError), self.engine.begin() as conn:
            lease.create(conn)  # a concurrent creator wins the insert: fine
        with self.engine.begin() as conn:
            return lease.take(conn, now)

    def release_lease(self, lease: Lease) -> None:
        with self.engine.begin() as conn:
            lease.release(conn)

    def mark_dispatched_many(
        self,
        event_ids: Sequence[str],
        dispatch_id: str,
        at: float,
        lease: Lease | None = None,
    ) -> dict[str, Status | None]:
        """pending|queued -> dispatched, for a batch in one transaction. Returns id -> the
        status it had before: ``QUEUED`` for every event this call moved (so the caller
        can tell a duplicate), ``None`` for an unknown id. With ``lease``, the same
        transaction renews it first and raises :class:`LeaseLost`, changing nothing, if
        another process holds it: only the lease holder dispatches."""
        if not event_ids:
            return {}
        with self.engine.begin() as conn:
            if lease is not None:
                lease.hold(conn, at)
            conn.execute(
                events.update()
                .where(
                    events.c.id.in_(event_ids),
                    events.c.status.in_([s.value for s in UNDISPATCHED]),
                )
                .values(status=Status.DISPATCHED.value, dispatch_id=dispatch_id, dispatched_at=at)
            )
            rows = conn.execute(
                sa.select(events.c.id, events.c.status, events.c.dispatch_id).where(
                    events.c.id.in_(event_ids)
                )
            ).all()
        before: dict[str, Status | None] = dict.fromkeys(event_ids)
        for r in rows:
            moved = r.status == Status.DISPATCHED.value and r.dispatch_id == dispatch_id
            before[r.id] = Status.QUEUED if moved else Status(r.status)
        return before

    def finished_among(self, event_ids: Sequence[str]) -> list[str]:
        """Those of ``event_ids`` that have succeeded or failed."""
        if not event_ids:
            return []
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(events.c.id).where(
                        events.c.id.in_(event_ids), events.c.status.in_([s.value for s in FINISHED])
                    )
                ).scalars()
            )

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
                ).where(events.c.status.in_([s.value for s in IN_FLIGHT]))
            ).all()
        return [InFlight(r.id, r.host, r.vm, r.policy, Status(r.status)) for r in rows]

    # -- worker --------------------------------------------------------------------
    def claim(
        self,
        event_id: str,
        dispatch_id: str,
        worker: str,
        at: float,
        max_attempts: int | None = None,
    ) -> Claim:
        """dispatched -> running, or running -> running again for the dispatch id that
        claimed it (its task message, redelivered after its worker died); each claim is
        an attempt. With ``max_attempts``, an event claimed that often already ends
        ``failed`` instead, in the same transaction: an action that kills its worker
        every time is not redelivered for ever."""
        claimable = sa.and_(
            events.c.id == event_id,
            sa.or_(
                events.c.status == Status.DISPATCHED.value,
                sa.and_(
                    events.c.status == Status.RUNNING.value,
                    events.c.dispatch_id == dispatch_id,
                ),
            ),
        )
        within = sa.true() if max_attempts is None else events.c.attempts < max_attempts
        with self.engine.begin() as conn:
            res = conn.execute(
                events.update()
                .where(claimable, within)
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
            if max_attempts is not None:
                res = conn.execute(
                    events.update()
                    .where(claimable, events.c.attempts >= max_attempts)
                    .values(
                        status=Status.FAILED.value,
                        dispatch_id=dispatch_id,
                        worker=worker,
                        error=f"gave up after {max_attempts} attempts: the action never "
                        "finished (its worker died or lost the broker each time)",
                        finished_at=at,
                    )
                )
                if res.rowcount == 1:
                    return Claim.EXHAUSTED
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


def _row(e: VmEventMessage, status: Status) -> dict[str, Any]:
    return {
        "id": e.id,
        "host": e.host,
        "vm": e.vm,
        "policy": e.policy,
        "action": e.action.value,
        "payload": json.dumps(e.payload),
        "status": status.value,
        "attempts": 0,
        "accepted_at": e.accepted_at,
    }
