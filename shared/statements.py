"""The ledger's statements on the hot path, built once with bound parameters.

Building a SQLAlchemy statement costs more than running it on SQLite (the claim, built
per call, spent most of its time in expression construction: ``make bench
BENCH=profile``). These are built at import and executed with a dict of parameters; the
methods of :class:`shared.ledger.EventLedger` that use them say what they mean.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from shared.clock import NOW
from shared.db import events, hosts, keys, vms
from shared.models import FINISHED, UNDISPATCHED, Status

#: attempts of an event when no maximum is set (``attempts < NO_LIMIT`` always holds)
NO_LIMIT = 2**31 - 1

_ID: sa.BindParameter[str] = sa.bindparam("event_id")
_TOKEN: sa.BindParameter[int] = sa.bindparam("token")
#: a claim's lease, in seconds from the ledger's time (shared.clock) of the statement
_UNTIL = NOW + sa.bindparam("lease_seconds", type_=sa.Float())

#: the event may be claimed by this message: dispatched, or running with its lease over
#: by the ledger's clock (never the claimant's: see shared.clock)
_CLAIMABLE = sa.and_(
    events.c.id == _ID,
    sa.or_(
        events.c.status == Status.DISPATCHED.value,
        sa.and_(
            events.c.status == Status.RUNNING.value,
            sa.func.coalesce(events.c.lease_expires_at, 0.0) < NOW,
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
        started_at=NOW,
        attempts=events.c.attempts + 1,
        fence=events.c.fence + 1,
        lease_expires_at=_UNTIL,
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
        finished_at=NOW,
        dead_at=NOW,
    )
)

#: the status of one event
STATUS = sa.select(events.c.status).where(events.c.id == _ID)

#: pending | queued -> cancelled: only before the dispatcher's mark, which is conditional
#: on the same statuses, so exactly one of the two moves the event
CANCEL = (
    events.update()
    .where(events.c.id == _ID, events.c.status.in_([s.value for s in UNDISPATCHED]))
    .values(status=Status.CANCELLED.value, finished_at=NOW)
)

#: the event is running under claim ``token``
_HELD = sa.and_(
    events.c.id == _ID,
    events.c.status == Status.RUNNING.value,
    events.c.fence == _TOKEN,
)

#: the holder of ``token`` extends its lease
RENEW = events.update().where(_HELD).values(lease_expires_at=_UNTIL)

#: running -> succeeded | failed, by the holder of ``token``; dead-lettered with ``p_dead``
FINISH = (
    events.update()
    .where(_HELD)
    .values(
        status=sa.bindparam("p_status"),
        error=sa.bindparam("p_error"),
        finished_at=NOW,
        dead_at=sa.case((sa.bindparam("p_dead", type_=sa.Boolean()), NOW), else_=sa.null()),
    )
)


# -- statements over a batch: a list bound as one parameter --------------------------
#
# On SQLite a list is an ``IN`` list, one bound parameter per value. On PostgreSQL that
# costs: planning a statement with a hundred parameters takes longer than running it
# (``BENCH_LEDGER=postgresql make bench BENCH=ingest`` shows it). There a list is one array
# parameter: ``= ANY(:ids)``, and tuples of values ``IN`` the rows of
# ``unnest(:name_0, :name_1, …)``, one array per column.


def _among(column: sa.ColumnElement[Any], name: str, postgres: bool) -> sa.ColumnElement[bool]:
    """``column`` is one of the list bound as ``name``."""
    if postgres:
        return column == sa.any_(sa.bindparam(name, type_=ARRAY(column.type)))
    return column.in_(sa.bindparam(name, expanding=True))


def _rows_among(
    columns: Sequence[sa.ColumnElement[Any]], name: str, postgres: bool
) -> sa.ColumnElement[bool]:
    """``(columns…)`` is one of the tuples bound as ``name`` (see :meth:`Batch.rows`)."""
    if postgres:
        arrays = [sa.bindparam(f"{name}_{i}", type_=ARRAY(c.type)) for i, c in enumerate(columns)]
        rows = (
            sa.func.unnest(*arrays)
            .table_valued(*(f"c{i}" for i in range(len(columns))))
            .render_derived()
        )
        return sa.tuple_(*columns).in_(sa.select(*rows.c))
    return sa.tuple_(*columns).in_(sa.bindparam(name, expanding=True))


#: the tuples :meth:`Batch.rows` binds, by name: how many columns each has
_WIDTHS = {"vms": 2, "keys": 3}


class Batch:
    """The statements over a batch of ids or keys, for one SQL dialect (see
    :func:`batch`). Bind a list of ids as ``ids``; tuples with :meth:`rows`."""

    def __init__(self, dialect: str) -> None:
        self.postgres = postgres = dialect == "postgresql"
        ids = _among(events.c.id, "ids", postgres)

        #: the producer: which of a request's ids are known, and as what
        self.KNOWN = sa.select(
            events.c.id,
            events.c.host,
            events.c.vm,
            events.c.policy,
            events.c.action,
            events.c.status,
        ).where(ids)
        #: the producer: pending -> queued, once the broker confirmed
        self.CONFIRM = (
            events.update()
            .where(ids, events.c.status == Status.PENDING.value)
            .values(status=Status.QUEUED.value)
        )
        #: those of a batch that are in the ledger
        self.PRESENT = sa.select(events.c.id).where(ids)
        #: pending | queued -> dispatched
        self.DISPATCH = (
            events.update()
            .where(ids, events.c.status.in_([s.value for s in UNDISPATCHED]))
            .values(
                status=Status.DISPATCHED.value,
                dispatch_id=sa.bindparam("p_dispatch_id"),
                dispatched_at=NOW,
            )
        )
        #: what a batch's events are now
        self.STATUSES = sa.select(events.c.id, events.c.status, events.c.dispatch_id).where(ids)
        #: those of a batch that have finished (succeeded or failed)
        self.FINISHED_AMONG = sa.select(events.c.id).where(
            ids, events.c.status.in_([s.value for s in FINISHED])
        )
        #: ... and finished at least ``age`` seconds ago (by the ledger's clock)
        self.FINISHED_BEFORE = self.FINISHED_AMONG.where(
            events.c.finished_at < NOW - sa.bindparam("age", type_=sa.Float())
        )

        #: the producer: the removal marks of a request's VMs (``rows("vms", …)``), read
        #: FOR SHARE so that a removal's mark waits for the request's transaction
        self.MARKED_VMS = (
            sa.select(vms.c.host, vms.c.vm, vms.c.removing_since)
            .where(_rows_among([vms.c.host, vms.c.vm], "vms", postgres))
            .with_for_update(read=True)
        )
        among_keys = _rows_among([keys.c.host, keys.c.vm, keys.c.policy], "keys", postgres)
        #: which of some keys (``rows("keys", …)``) the mapping has
        self.KEYS_AMONG = sa.select(keys.c.host, keys.c.vm, keys.c.policy).where(among_keys)
        #: ... read FOR SHARE, by a request about to publish to them: a retirement of one
        #: of them (which locks it FOR UPDATE) waits for the request's transaction, or the
        #: request waits for the retirement's and then finds the key gone
        self.KNOWN_KEYS = self.KEYS_AMONG.with_for_update(read=True)
        #: ... locked for a retirement; a key a request holds is skipped (it has work)
        self.RETIRING_KEYS = self.KEYS_AMONG.with_for_update(skip_locked=True)
        #: which of some keys have an event waiting (pending or queued) in their queue
        self.KEYS_WAITING = (
            sa.select(events.c.host, events.c.vm, events.c.policy)
            .where(
                _rows_among([events.c.host, events.c.vm, events.c.policy], "keys", postgres),
                events.c.status.in_([s.value for s in UNDISPATCHED]),
            )
            .distinct()
        )
        #: which of some VMs (``rows("vms", …)``) the mapping has
        self.KNOWN_VMS = sa.select(vms.c.host, vms.c.vm).where(
            _rows_among([vms.c.host, vms.c.vm], "vms", postgres)
        )
        #: which of some hosts (bound as ``hosts``) the mapping has
        self.KNOWN_HOSTS = sa.select(hosts.c.host).where(_among(hosts.c.host, "hosts", postgres))

    def rows(self, name: str, values: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
        """The parameters that bind ``values`` as ``name``: (host, vm) tuples as "vms",
        (host, vm, policy) tuples as "keys"."""
        if not self.postgres:
            return {name: list(values)}
        return {f"{name}_{i}": [v[i] for v in values] for i in range(_WIDTHS[name])}


@functools.cache
def batch(dialect: str) -> Batch:
    """The batch statements for ``dialect`` (``conn.dialect.name``), built once."""
    return Batch(dialect)
