"""The ledger's statements on the hot path, built once with bound parameters.

Building a SQLAlchemy statement costs more than running it on SQLite: the claim of an
event took about 0.9 ms per call when built per call, most of it in expression
construction. These are built at import and executed with a dict of parameters; the
methods of :class:`shared.ledger.EventLedger` that use them say what they mean.
"""

from __future__ import annotations

import sqlalchemy as sa

from shared.db import events
from shared.models import Status

#: attempts of an event when no maximum is set (``attempts < NO_LIMIT`` always holds)
NO_LIMIT = 2**31 - 1

_ID: sa.BindParameter[str] = sa.bindparam("event_id")
_AT: sa.BindParameter[float] = sa.bindparam("at")
_TOKEN: sa.BindParameter[int] = sa.bindparam("token")

#: the event may be claimed by this message: dispatched, or running with its lease over
_CLAIMABLE = sa.and_(
    events.c.id == _ID,
    sa.or_(
        events.c.status == Status.DISPATCHED.value,
        sa.and_(
            events.c.status == Status.RUNNING.value,
            sa.func.coalesce(events.c.lease_expires_at, 0.0) < _AT,
        ),
    ),
)

#: dispatched | running (lease over) -> running, a new attempt with a new fence
CLAIM = (
    events.update()
    .where(_CLAIMABLE, events.c.attempts < sa.bindparam("max_attempts"))
    .values(
        status=Status.RUNNING.value,
        dispatch_id=sa.bindparam("p_dispatch_id"),
        worker=sa.bindparam("p_worker"),
        started_at=_AT,
        attempts=events.c.attempts + 1,
        fence=events.c.fence + 1,
        lease_expires_at=sa.bindparam("p_lease_expires_at"),
        error=None,
    )
    .returning(*events.columns)  # the event as accepted, in the same statement
)

#: claimable but out of attempts -> failed and dead-lettered
EXHAUST = (
    events.update()
    .where(_CLAIMABLE, events.c.attempts >= sa.bindparam("max_attempts"))
    .values(
        status=Status.FAILED.value,
        dispatch_id=sa.bindparam("p_dispatch_id"),
        worker=sa.bindparam("p_worker"),
        error=sa.bindparam("p_error"),
        finished_at=_AT,
        dead_at=_AT,
    )
)

#: the status of one event
STATUS = sa.select(events.c.status).where(events.c.id == _ID)

#: the event is running under claim ``token``
_HELD = sa.and_(
    events.c.id == _ID,
    events.c.status == Status.RUNNING.value,
    events.c.fence == _TOKEN,
)

#: the holder of ``token`` extends its lease
RENEW = events.update().where(_HELD).values(lease_expires_at=sa.bindparam("p_until"))

#: running -> succeeded | failed, by the holder of ``token``
FINISH = (
    events.update()
    .where(_HELD)
    .values(
        status=sa.bindparam("p_status"),
        error=sa.bindparam("p_error"),
        finished_at=_AT,
        dead_at=sa.bindparam("p_dead_at"),
    )
)

_IDS: sa.BindParameter[list[str]] = sa.bindparam("ids", expanding=True)

#: pending | queued -> dispatched, for a batch
DISPATCH = (
    events.update()
    .where(events.c.id.in_(_IDS), events.c.status.in_(sa.bindparam("undispatched", expanding=True)))
    .values(
        status=Status.DISPATCHED.value,
        dispatch_id=sa.bindparam("p_dispatch_id"),
        dispatched_at=sa.bindparam("p_at"),
    )
)
#: what a batch's events are now
STATUSES = sa.select(events.c.id, events.c.status, events.c.dispatch_id).where(
    events.c.id.in_(_IDS)
)
#: those of a batch that have finished (succeeded or failed)
FINISHED_AMONG = sa.select(events.c.id).where(
    events.c.id.in_(_IDS), events.c.status.in_(sa.bindparam("finished", expanding=True))
)
#: ... and finished before a time
FINISHED_BEFORE = FINISHED_AMONG.where(events.c.finished_at < sa.bindparam("before"))
