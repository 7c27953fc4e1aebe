"""What the ledger knows of why a queued event waits (docs/design.md §7): its place in
its key, the dispatcher's ``paused`` flag, its host's and VM's availability. The rest
(limits, classes, turns) only the dispatcher holding the head knows."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shared.db import events, hosts, vms
from shared.lease import DISPATCHER, holder_paused
from shared.models import Status


@dataclass(frozen=True)
class Holds:
    """The ledger's facts about one queued event."""

    #: the live dispatcher said it is paused
    paused: bool
    host_available: bool
    vm_available: bool
    #: queued events of its key accepted before it (the same instant: the smaller id)
    ahead: int
    #: of those, the ones accepted strictly earlier (the same instant is one request:
    #: its order in the queue is the request's, which the ledger does not keep)
    surely_ahead: int
    #: the first of them, the key's head by the ledger; None when none is ahead
    head: str | None


class HoldLedger:
    engine: Engine

    def holds(self, event: dict[str, object]) -> Holds:
        """The ledger's facts about ``event`` (a row of ``get``), read in one connection:
        counts over its key's queued events only (``ix_events_key_status``)."""
        host, vm, at, event_id = event["host"], event["vm"], event["accepted_at"], event["id"]
        same_key = sa.and_(
            events.c.host == host,
            events.c.vm == vm,
            events.c.policy == event["policy"],
            events.c.status == Status.QUEUED.value,
        )
        before = sa.or_(
            events.c.accepted_at < at, sa.and_(events.c.accepted_at == at, events.c.id < event_id)
        )
        strictly = sa.case((events.c.accepted_at < at, 1), else_=0)
        with self.engine.connect() as conn:
            counted = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(strictly), 0)).where(
                    same_key, before
                )
            ).one()
            head = (
                conn.execute(
                    sa.select(events.c.id)
                    .where(same_key, before)
                    .order_by(events.c.accepted_at, events.c.id)
                    .limit(1)
                ).scalar()
                if counted[0]
                else None
            )
            host_ok = conn.execute(
                sa.select(hosts.c.available).where(hosts.c.host == host)
            ).scalar()
            vm_ok = conn.execute(
                sa.select(vms.c.available).where(vms.c.host == host, vms.c.vm == vm)
            ).scalar()
            paused = holder_paused(conn, DISPATCHER)
        return Holds(
            paused=paused,
            host_available=host_ok is not False,
            vm_available=vm_ok is not False,
            ahead=int(counted[0]),
            surely_ahead=int(counted[1]),
            head=head,
        )
