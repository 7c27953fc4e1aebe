"""The sweeper: no event stays in flight for want of a task message.

Once the dispatcher has acked an event, its Celery task message is the only thing that
will run it. If that message is lost (revoked from Flower, purged, rejected by a worker
that could not publish its retry) or its worker died holding the claim, the event would
stay ``dispatched`` or ``running`` for ever, holding its VM and a ``MAX_PARALLEL`` slot.
Every ``SWEEP_INTERVAL`` the active dispatcher asks the ledger for such events — dispatched
and unclaimed for ``RESEND_AFTER`` seconds, or running with an expired claim — and sends
their task again. The worker's claim makes a second task message harmless, and each
claim is an attempt, so an event that kills its worker ends failed after
``MAX_ATTEMPTS``.

A claim that expired while the ledger itself was down is no sign of a dead holder: no
one could renew. So the sweeper takes expired claims over only once the ledger has
answered it promptly for a whole ``CLAIM_LEASE_SECONDS`` (since its start, or since the
ledger last failed or made it wait a third of a lease — a lock held for less than the
busy timeout raises nothing, it only blocks): a living holder has renewed by then, or
recorded its outcome.

A dispatcher shard sweeps only the events of the hosts it serves (``owns``: the hosts
of the partitions it holds): another shard's are its own to send again, to count
against its limits and to fence with its own partitions. The ledger cannot tell a
host's partition (a BLAKE2b digest), so the shard reads a page of
``max(SWEEP_BATCH, MAX_PARALLEL)`` overdue events and keeps its own: in flight there
are at most ``MAX_PARALLEL`` events across all shards, so the page holds every one of
ours. A single dispatcher (``owns`` None) serves every host.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from scheduler.dispatcher.confirms import ConfirmingProducer
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from scheduler.dispatcher.tasks import TaskSender
from shared.fencing import Fence
from shared.models import VmEventMessage
from shared.store import Store

log = logging.getLogger(__name__)

#: events sent again per sweep at most
SWEEP_BATCH = 100


class Sweeper:
    def __init__(
        self,
        settings: DispatcherSettings,
        store: Store,
        state: DispatcherState[Any],
        tasks: TaskSender,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        """``owns``: whether this process serves a host (a shard: the host's partition
        is one it holds); None: every host (a single dispatcher)."""
        self.settings = settings
        self.store = store
        self.state = state
        self.tasks = tasks
        self.owns = owns
        self.resent_total = 0
        self._next = 0.0
        #: since when the ledger has answered without failing (monotonic)
        self._ledger_ok_since = time.monotonic()

    def ledger_failed(self) -> None:
        """The ledger failed or stalled: expired claims prove nothing for a lease now."""
        self._ledger_ok_since = time.monotonic()

    def ledger_was_slow(self, seconds: float) -> bool:
        """Whether the ledger made someone wait ``seconds``, long enough for a claim to
        miss a renewal: then :meth:`ledger_failed` is called."""
        slow = seconds > self.settings.claim_lease_seconds / 3
        if slow:
            self.ledger_failed()
        return slow

    def _judges_claims(self) -> bool:
        return time.monotonic() - self._ledger_ok_since >= self.settings.claim_lease_seconds

    def maybe_sweep(self, producer: ConfirmingProducer, fence: Fence | None = None) -> int:
        """Send again the tasks of overdue events, if a sweep is due; returns how many.
        ``fence``: checked in the transaction that marks them (:mod:`shared.fencing`)."""
        if time.monotonic() < self._next:
            return 0
        self._next = time.monotonic() + self.settings.sweep_interval
        overdue = self._overdue(
            self.settings.resend_after, SWEEP_BATCH, expired_claims=self._judges_claims()
        )
        return self._resend(producer, overdue, fence, judging=True)

    def resend_unclaimed(self, producer: ConfirmingProducer, fence: Fence | None = None) -> int:
        """At the start of a broker session, send again the task of every dispatched event
        that no worker has claimed: their task messages are transient (``TASK_PERSISTENT``
        off), so if the session ended because the broker restarted they are gone, and
        the sweep would find them only ``RESEND_AFTER`` later. Where they are not gone,
        the second message is harmless (the claim). In flight are at most MAX_PARALLEL."""
        if self.settings.task_persistent:
            return 0
        limit = max(SWEEP_BATCH, self.settings.max_parallel)
        overdue = self._overdue(0.0, limit, expired_claims=False)
        return self._resend(producer, overdue, fence, judging=False)

    def _overdue(
        self, resend_after: float, limit: int, expired_claims: bool
    ) -> list[VmEventMessage]:
        """At most ``limit`` overdue events of the hosts this process serves, oldest
        sent first (:meth:`~shared.ledger.EventLedger.overdue`). A shard filters a page
        that holds every event in flight (see the module's docstring)."""
        if self.owns is None:
            return self.store.overdue(resend_after, limit, expired_claims=expired_claims)
        owns = self.owns
        page = self.store.overdue(
            resend_after,
            max(limit, SWEEP_BATCH, self.settings.max_parallel),
            expired_claims=expired_claims,
        )
        return [e for e in page if owns(e.host)][:limit]

    def _resend(
        self,
        producer: ConfirmingProducer,
        overdue: list[VmEventMessage],
        fence: Fence | None,
        judging: bool,
    ) -> int:
        """Send the tasks of ``overdue`` again; ``judging``: some were taken for expired
        claims, which a ledger that was slow meanwhile makes doubtful."""
        if not overdue:
            return 0
        dispatch_id = uuid.uuid4().hex
        started = time.monotonic()
        hosts = {e.host for e in overdue}
        still = set(self.store.mark_resent([e.id for e in overdue], dispatch_id, fence, hosts))
        if self.ledger_was_slow(time.monotonic() - started) and judging:
            return 0  # a lock just ended: the claims it let expire are not judged now
        batch = [e for e in overdue if e.id in still]
        self.state.restore(
            (e.id, e.host, e.vm, e.action.value, e.group) for e in batch
        )  # counted in flight
        self.tasks.send(producer, batch, dispatch_id, again=True)
        self.resent_total += len(batch)
        log.warning(
            "sent the task of %d in-flight events again (their message was lost, or their "
            "worker's claim expired): %s",
            len(batch),
            ", ".join(e.id for e in batch[:10]),
        )
        return len(batch)
