"""What to do with a head the ledger may already know, pure: no I/O, no clock.

A delivery of an event can arrive more than once: the broker redelivers what a crashed
or disconnected dispatcher never acked, and a producer may publish an event twice. The
adapter (:mod:`scheduler.dispatcher.handover`) asks :func:`ledger_needed` whether the
ledger's status matters, looks it up only then, and carries out the :func:`plan`:

==============  ============  ======================  ================
redelivered     dispatcher    ledger status           plan
==============  ============  ======================  ================
yes             any           dispatched              REPUBLISH
yes             any           running                 COUNT
yes             any           succeeded, failed,      ACK
                              cancelled
any             new           (any other)             HOLD
any             held          (any other)             DUPLICATE
any             in flight     pending, queued         REPLACE_STALE
any             in flight     (any other), unknown    DUPLICATE
==============  ============  ======================  ================

A redelivered event the ledger says is dispatched is never offered to the round-robin:
its task may be lost (the crash came before the publish), so it is counted in flight and
published again; the worker's claim makes a second task message harmless.

A first delivery is held without asking the ledger, a cancelled event's too: the ledger's
conditional mark refuses it when it is picked, and the handover acks it then, sending
nothing (:meth:`~scheduler.dispatcher.handover.Handover.dispatch`).
"""

from __future__ import annotations

from enum import Enum

from scheduler.dispatcher.dispatcher import Known
from shared.models import ENDED, UNDISPATCHED, Status


class Plan(Enum):
    #: offer it to the dispatcher (a refusal makes it a duplicate)
    HOLD = "hold"
    #: counted in flight here but never handed over (the ledger says not dispatched): a
    #: stale count. Abort that in-flight entry and offer this delivery instead
    REPLACE_STALE = "replace_stale"
    #: count it in flight, publish its task again (a new dispatch id), ack
    REPUBLISH = "republish"
    #: count it in flight (a worker runs it), ack
    COUNT = "count"
    #: finished or cancelled already: ack
    ACK = "ack"
    #: another delivery carries the event: ack (and log it)
    DUPLICATE = "duplicate"


def ledger_needed(redelivered: bool, known: Known) -> bool:
    """Whether :func:`plan` depends on the ledger's status of the event."""
    return redelivered or known is Known.IN_FLIGHT


def plan(redelivered: bool, known: Known, status: Status | None) -> Plan:
    """The plan for one delivery. ``status`` is the ledger's (None: the ledger does not
    know the id, or it was not looked up because :func:`ledger_needed` said so)."""
    if redelivered:
        if status is Status.DISPATCHED:
            return Plan.REPUBLISH
        if status is Status.RUNNING:
            return Plan.COUNT
        if status in ENDED:
            return Plan.ACK
    if known is Known.NEW:
        return Plan.HOLD
    if known is Known.IN_FLIGHT and status in UNDISPATCHED:
        return Plan.REPLACE_STALE
    return Plan.DUPLICATE
