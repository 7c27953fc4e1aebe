"""Heads in, picks out: the deliveries the dispatcher holds and the tasks it hands over.

In: an event's delivery is held by the dispatcher, or — when the ledger already knows
the event — handled as :mod:`scheduler.dispatcher.redelivery` plans; a completion frees a
slot (and a periodic reconcile frees those whose completion never arrived). Out: a batch
of picks is marked dispatched in the ledger, published as Celery tasks with pipelined
confirms, and only then acked. A pick the ledger refuses to mark — dispatched already by
another message, or cancelled — is acked without a task, its slot freed at once.

A dispatcher shard (``shared_named``) has the ledger keep the named limits across every
shard (:mod:`shared.named_budget`): a pick refused because another shard's work fills a
limit is not acked but held again, first in line, its key waiting on that limit; and the
other shards' use of the limits is counted again (:meth:`Handover.refresh_named`) after
such a refusal and every round of the shard's — and every :data:`NAMED_RECOUNT` while a
head waits on that use — so that the dispatcher rarely proposes what the ledger refuses,
and a head the others held goes soon after their use falls.

An event message whose id the ledger does not know is never acked as a duplicate: its
row may yet appear (a producer request that timed out discarded it while a retry of the
same event is about to confirm it again). It is *parked* — unacked, its key waiting —
and looked up again every second; after ``UNKNOWN_EVENT_GRACE`` it is moved to the
dead-letter queue for an operator.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from kombu.message import Message

from scheduler.dispatcher.confirms import ConfirmingProducer
from scheduler.dispatcher.dispatcher import Held, Known
from scheduler.dispatcher.limits import Hold
from scheduler.dispatcher.redelivery import Plan, ledger_needed, plan
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from scheduler.dispatcher.tasks import TaskSender, event_id_of
from shared.fencing import Fence
from shared.models import FINISHED, UNDISPATCHED, Status, VmEventMessage
from shared.named_budget import Limited, NamedBudget, Work
from shared.store import Store

log = logging.getLogger(__name__)

DeadLetter = Callable[[ConfirmingProducer, Message, str], None]

#: seconds between lookups of the parked events' ids
PARKED_RETRY = 1.0
#: seconds between counts of the other shards' use of the named limits while a head
#: waits on it (a shard's rounds count it too, every third of a lease)
NAMED_RECOUNT = 1.0
#: the worker's task events that end a task message
TASK_ENDED = frozenset({"task-succeeded", "task-failed"})


def completed_ids(body: Any) -> list[str]:
    """The events a message on the completions queue says ended: Celery task events
    (one, or a worker's buffered batch), of which only those that end a task count.
    Raises ValueError for anything else."""
    batch = body if isinstance(body, list) else [body]
    ids: list[str] = []
    for event in batch:
        if not (isinstance(event, dict) and isinstance(event.get("type"), str)):
            raise ValueError("not Celery task events")
        if event["type"] in TASK_ENDED:
            if not isinstance(event.get("uuid"), str):
                raise ValueError(f"{event['type']} event without a task id")
            ids.append(event_id_of(event["uuid"]))
    return ids


class Handover:
    def __init__(
        self,
        settings: DispatcherSettings,
        store: Store,
        state: DispatcherState[Message],
        tasks: TaskSender,
        dead_letter: DeadLetter,
        shared_named: bool = False,
    ) -> None:
        """``shared_named``: this dispatcher is one shard of several, and the named
        limits must hold across all of them (the ledger checks them as it marks)."""
        self.settings = settings
        self.shared_named = shared_named
        self.store = store
        self.state = state
        self.tasks = tasks
        self.dead_letter = dead_letter
        self._next_reconcile = 0.0
        #: event id -> (its delivery, when it was parked): unknown to the ledger so far
        self._parked: dict[str, tuple[Held[Message], float]] = {}
        self._next_parked = 0.0
        #: events of the completions in hand that the ledger shows finished
        self._finished: set[str] = set()
        #: when the other shards' use of the named limits may next be counted (monotonic)
        self._next_recount = 0.0

    # -- in ------------------------------------------------------------------------
    def on_event(self, body: Any, message: Message, producer: ConfirmingProducer) -> None:
        event = VmEventMessage.model_validate(body)
        redelivered = bool(message.delivery_info.get("redelivered"))
        known = self.state.knows(event.id)
        status = self.store.status_of(event.id) if ledger_needed(redelivered, known) else None
        todo = plan(redelivered, known, status)
        if todo in (Plan.REPUBLISH, Plan.COUNT):
            self.state.restore([(event.id, event.host, event.vm, event.action.value, event.group)])
            if todo is Plan.REPUBLISH:
                # the crash may have come before the task was published: publish again
                self.tasks.send(producer, [event], uuid.uuid4().hex, again=True)
        elif todo is Plan.HOLD and self.state.offer(event, message):
            return
        elif todo is Plan.REPLACE_STALE and self.state.replace_stale(event, message):
            return  # counted in flight but never handed over: this delivery is the event
        elif todo is not Plan.ACK:  # a duplicate, or refused
            log.info("duplicate delivery of event %s acked", event.id)
        message.ack()

    def check_completions(self, bodies: list[Any]) -> None:
        """Look up, in one query, which events of the completions about to be handled
        the ledger shows finished (:meth:`on_completion` asks this first)."""
        ids: list[str] = []
        for body in bodies:
            with contextlib.suppress(ValueError):  # handled (dead-lettered) on its turn
                ids += self._ours(completed_ids(body))
        self._finished = set(self.store.finished_among(ids)) if ids else set()

    def _ours(self, event_ids: list[str]) -> list[str]:
        """Those of ``event_ids`` counted in flight here: a shard sees every worker's task
        events, and the others' are none of its business (nor of the ledger's)."""
        return [i for i in event_ids if self.state.knows(i) is Known.IN_FLIGHT]

    def on_completion(self, body: Any, message: Message) -> None:
        """Free the slots of the events a completion names — those the ledger shows
        finished: a completion is a hint, and one forged or misdirected on the broker
        frees nothing. A worker's task events are its completions (a batch of them, in
        prefork)."""
        for event_id in self._ours(completed_ids(body)):
            if event_id in self._finished or self.store.status_of(event_id) in FINISHED:
                self.state.complete([event_id])
            # a task that skipped an event another task message holds ends too: not
            # a completion of the event
        message.ack()

    def maybe_reconcile(self) -> None:
        """Free the slots of in-flight events the ledger says finished at least one
        reconcile interval ago: the safety net for a completion message that never
        arrived (workers do not wait for its confirm). One finished just now has its
        completion on the way (the worker records, then announces): it is left to it.
        Cheap: at most MAX_PARALLEL ids."""
        if time.monotonic() < self._next_reconcile:
            return
        interval = self.settings.reconcile_interval
        self._next_reconcile = time.monotonic() + interval
        finished = self.store.finished_among(self.state.in_flight_ids(), finished_for=interval)
        if finished:
            self.state.complete(finished)
            log.info("freed %d slots whose completion never arrived", len(finished))

    # -- out -----------------------------------------------------------------------
    def dispatch(self, producer: ConfirmingProducer, fence: Fence | None = None) -> None:
        """Dispatch while the dispatcher gives, a batch at a time: one ledger transaction
        marks the batch dispatched, its tasks are published with confirms pipelined, and
        only then are its events acked."""
        self._maybe_recount()
        while True:
            picks = self.state.pick_batch(self.settings.dispatch_batch, time.time)
            for copy in self.state.take_duplicates():
                log.info("event %s is in flight already; held copy acked", copy.event.id)
                copy.handle.ack()
            if not picks:
                return
            dispatch_id = uuid.uuid4().hex
            try:
                before = self.store.mark_dispatched_many(
                    [h.event.id for h in picks],
                    dispatch_id,
                    fence,
                    {h.event.host for h in picks},
                    named=self._budget(picks),
                )
            except Exception:
                self.state.give_back(picks)  # nothing changed: they wait, first in line
                raise
            limited = [(h, was) for h in picks if isinstance(was := before[h.event.id], Limited)]
            if limited:  # still queued: they wait, first in line, on the limit that is full
                self.state.refuse((h, Hold(was.kind, was.name)) for h, was in limited)
                for h, was in limited:
                    log.info(
                        "event %s waits: %s %s is at %d/%d across the shards",
                        h.event.id,
                        was.kind,
                        was.name,
                        was.used,
                        was.limit,
                    )
            fresh = [h for h in picks if before[h.event.id] is Status.QUEUED]
            try:
                self.tasks.send(producer, [h.event for h in fresh], dispatch_id)
            except Exception:
                # the broker failed: free the slots; the unacked events come back
                # redelivered, and the ledger says dispatched: their tasks are sent again
                self.state.abort(h.event.id for h in picks)
                raise
            for h in picks:
                was = before[h.event.id]
                if isinstance(was, Limited):
                    continue  # held again, not acked
                if was is Status.QUEUED:
                    h.handle.ack()
                elif was is None:
                    self._park(h)
                elif was is Status.CANCELLED:  # its slot back at once, its key moves on
                    self.state.abort([h.event.id])
                    log.info("event %s was cancelled: message acked, nothing sent", h.event.id)
                    h.handle.ack()
                else:  # a second message for an event another message already carries
                    self.state.abort([h.event.id])
                    log.info("event %s is %s already; duplicate message acked", h.event.id, was)
                    h.handle.ack()
            if limited:  # the others' use, which this shard proposed beyond
                self.refresh_named()

    def _budget(self, picks: list[Held[Message]]) -> NamedBudget | None:
        """What the ledger must check the named limits of ``picks`` against: on a
        shard with any named limit set, the limits and each pick's work; else nothing."""
        if not self.shared_named:
            return None
        limits = self.state.named_config()
        if not limits.any:
            return None
        return NamedBudget(
            limits,
            {
                h.event.id: Work(
                    h.event.host, h.event.vm, h.event.policy, h.event.action.value, h.event.group
                )
                for h in picks
            },
        )

    def _maybe_recount(self) -> None:
        """Count the other shards' use again if a head waits on it and the last count
        is :data:`NAMED_RECOUNT` old: the head goes soon after their use falls, not at
        the shard's next round."""
        if not self.shared_named or time.monotonic() < self._next_recount:
            return
        if self.state.waits_on_other_shards():
            self.refresh_named()

    def refresh_named(self) -> None:
        """On a shard with named limits: count their use across every shard in the
        ledger (:meth:`~shared.ledger.EventLedger.named_in_flight`), so that the other
        shards' part is counted with this one's own until the next count. Called after
        a refusal and on every round of the shard's (:mod:`.tenure`)."""
        if not self.shared_named or not self.state.named_config().any:
            return
        self._next_recount = time.monotonic() + NAMED_RECOUNT
        use = self.store.named_in_flight()
        self.state.set_global_named(
            {
                **{Hold("action", a): n for a, n in use.actions.items()},
                **{Hold("group", g): n for g, n in use.groups.items()},
            }
        )

    # -- parked: event messages the ledger does not know (yet) ------------------------
    def _park(self, held: Held[Message]) -> None:
        self.state.abort([held.event.id])
        self._parked[held.event.id] = (held, time.monotonic())
        log.warning(
            "event %s is not in the ledger (yet): parked, not acked; looked up again every "
            "%.0f s, dead-lettered after %.0f s",
            held.event.id,
            PARKED_RETRY,
            self.settings.unknown_event_grace,
        )

    def maybe_retry_parked(self, producer: ConfirmingProducer) -> None:
        """Look the parked events up again: dispatch those whose row appeared, ack those
        carried by another message, dead-letter those unknown for too long."""
        if not self._parked or time.monotonic() < self._next_parked:
            return
        self._next_parked = time.monotonic() + PARKED_RETRY
        for event_id, (held, since) in list(self._parked.items()):
            status = self.store.status_of(event_id)
            if status is None and time.monotonic() - since < self.settings.unknown_event_grace:
                continue
            del self._parked[event_id]
            if status is None:
                reason = (
                    f"the ledger has no event {event_id} after "
                    f"{self.settings.unknown_event_grace:.0f} s; re-post it to run it"
                )
                self.dead_letter(producer, held.handle, reason)
            elif status in UNDISPATCHED and self.state.offer(held.event, held.handle):
                log.info("parked event %s is in the ledger now: back in line", event_id)
            else:
                log.info("parked event %s is %s: message acked", event_id, status.value)
                held.handle.ack()

    def drop_parked(self) -> list[Held[Message]]:
        """Forget the parked deliveries (the session ended, or they are handed back):
        the broker delivers them again."""
        dropped = [held for held, _ in self._parked.values()]
        self._parked.clear()
        return dropped

    @property
    def parked(self) -> int:
        return len(self._parked)
