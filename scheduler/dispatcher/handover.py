"""Heads in, picks out: the deliveries the scheduler holds and the tasks it hands over.

In: an event's delivery is held by the dispatcher, or — when the ledger already knows
the event — handled as :mod:`scheduler.dispatcher.redelivery` plans; a completion frees a
slot (and a periodic reconcile frees those whose completion never arrived). Out: a batch
of picks is marked dispatched in the ledger, published as Celery tasks with pipelined
confirms, and only then acked.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from celery import Celery
from kombu.message import Message

from scheduler.dispatcher.confirms import ConfirmingProducer
from scheduler.dispatcher.redelivery import Plan, ledger_needed, plan
from scheduler.dispatcher.settings import SchedulerSettings
from scheduler.dispatcher.state import DispatcherState
from scheduler.worker.app import TASK_NAME
from shared.lease import Lease
from shared.models import FINISHED, Completion, Status, VmEventMessage
from shared.store import Store

log = logging.getLogger(__name__)


class Handover:
    def __init__(
        self,
        settings: SchedulerSettings,
        store: Store,
        state: DispatcherState[Message],
        celery: Celery,
    ) -> None:
        self.settings = settings
        self.topology = settings.topology
        self.store = store
        self.state = state
        self.celery = celery
        self._next_reconcile = 0.0

    # -- in ------------------------------------------------------------------------
    def on_event(self, body: Any, message: Message, producer: ConfirmingProducer) -> None:
        event = VmEventMessage.model_validate(body)
        redelivered = bool(message.delivery_info.get("redelivered"))
        known = self.state.knows(event.id)
        status = self.store.status_of(event.id) if ledger_needed(redelivered, known) else None
        todo = plan(redelivered, known, status)
        if todo in (Plan.REPUBLISH, Plan.COUNT):
            self.state.restore([(event.id, event.host, event.vm)])
            if todo is Plan.REPUBLISH:
                # the crash may have come before the task was published: publish again
                self._publish(producer, [event], uuid.uuid4().hex)
        elif todo is Plan.HOLD and self.state.offer(event, message):
            return
        elif todo is Plan.REPLACE_STALE and self.state.replace_stale(event, message):
            return  # counted in flight but never handed over: this delivery is the event
        elif todo is not Plan.ACK:  # a duplicate, or refused
            log.info("duplicate delivery of event %s acked", event.id)
        message.ack()

    def on_completion(self, body: Any, message: Message) -> None:
        """Free the event's slot — if the ledger shows it finished: a completion message
        is a hint, and one forged or misdirected on the broker frees nothing."""
        done = Completion.model_validate(body)
        if self.store.status_of(done.event_id) in FINISHED:
            self.state.complete([done.event_id])
        else:
            log.warning(
                "completion of event %s, which the ledger does not show finished: ignored",
                done.event_id,
            )
        message.ack()

    def maybe_reconcile(self) -> None:
        """Free the slots of in-flight events the ledger says finished: the safety net
        for a completion message that never arrived (workers do not wait for its
        confirm). Cheap: at most MAX_PARALLEL ids."""
        if time.monotonic() < self._next_reconcile:
            return
        self._next_reconcile = time.monotonic() + self.settings.reconcile_interval
        finished = self.store.finished_among(self.state.in_flight_ids())
        if finished:
            self.state.complete(finished)
            log.info("freed %d slots whose completion never arrived", len(finished))

    # -- out -----------------------------------------------------------------------
    def dispatch(self, producer: ConfirmingProducer, lease: Lease | None = None) -> None:
        """Dispatch while the dispatcher gives, a batch at a time: one ledger transaction
        marks the batch dispatched, its tasks are published with confirms pipelined, and
        only then are its events acked."""
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
                    [h.event.id for h in picks], dispatch_id, time.time(), lease
                )
                fresh = [h for h in picks if before[h.event.id] is Status.QUEUED]
                self._publish(producer, [h.event for h in fresh], dispatch_id)
            except Exception:
                # the ledger or the broker failed: nothing was handed over for sure, so
                # free the slots; the unacked events come back redelivered
                self.state.abort(h.event.id for h in picks)
                raise
            for h in picks:
                if before[h.event.id] is not Status.QUEUED:
                    # a second message for an event another message already carries
                    self.state.abort([h.event.id])
                    log.info(
                        "event %s is %s already; duplicate message acked",
                        h.event.id,
                        before[h.event.id],
                    )
                h.handle.ack()

    def _publish(
        self, producer: ConfirmingProducer, batch: list[VmEventMessage], dispatch_id: str
    ) -> None:
        """One Celery task per event (task id = event id) to its profile's actions
        queue; returns once the broker confirmed them all."""

        def send(event: VmEventMessage) -> Any:
            queue = self.topology.actions_queue_of(self.settings.profile_for(event.action))
            return lambda p: self.celery.send_task(
                TASK_NAME,
                args=[event.model_dump(mode="json"), dispatch_id],
                task_id=event.id,
                queue=queue.name,
                producer=p,
                mandatory=True,
            )

        producer.publish_all([send(e) for e in batch])
