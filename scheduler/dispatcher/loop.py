"""The scheduler's AMQP adapter: consume heads, follow the mapping, dispatch, reconnect.

One thread owns the connection. Broker callbacks only put deliveries in an inbox; the
loop body handles the inbox, then dispatches while the Dispatcher
gives, then waits for more frames. Per dispatch, in this order:

1. the ledger marks the event ``dispatched`` (so a restarted scheduler counts it),
2. the Celery task (id = event id) is published with a confirm,
3. the event's delivery is acked.

A crash between any two steps leaves the event unacked: it is redelivered, and a
redelivered event that the ledger says is ``dispatched`` is published again — the
worker's claim makes that second task message harmless.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from typing import Any

import kombu
from celery import Celery
from kombu.message import Message

from scheduler.dispatcher.confirms import ConfirmingProducer
from scheduler.dispatcher.dispatcher import Dispatcher, Held
from scheduler.dispatcher.settings import SchedulerSettings
from scheduler.worker.app import TASK_NAME
from shared.kombu_topology import queue
from shared.models import (
    FINISHED,
    Completion,
    Key,
    MappingDelta,
    MappingSnapshot,
    Status,
    VmEventMessage,
)
from shared.store import Store

log = logging.getLogger(__name__)

Inbox = deque[tuple[str, Any, Message]]


class SchedulerLoop:
    def __init__(
        self,
        settings: SchedulerSettings,
        store: Store,
        dispatcher: Dispatcher[Message],
        lock: threading.Lock,
        celery: Celery,
    ) -> None:
        self.settings = settings
        self.topology = settings.topology
        self.store = store
        self.dispatcher = dispatcher
        self.lock = lock
        self.celery = celery
        self.connected = threading.Event()
        self.mapping_version = 0
        self._inbox: Inbox = deque()
        self._queues: dict[str, tuple[str, str, str]] = {}  # consumed queue -> key
        self._events: kombu.Consumer | None = None
        self._next_resync_check = 0.0
        self._next_reconcile = 0.0

    # -- lifecycle -----------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Run sessions until ``stop``; reconnect with capped exponential backoff."""
        delay = 0.2
        while not stop.is_set():
            started = time.monotonic()
            try:
                self._session(stop)
            except Exception as exc:
                log.warning("broker session ended: %r; reconnecting in %.1f s", exc, delay)
            finally:
                self._end_session()
            if time.monotonic() - started > 10:
                delay = 0.2
            stop.wait(delay)
            delay = min(delay * 2, 10.0)

    def _end_session(self) -> None:
        self.connected.clear()
        self._events = None
        self._queues.clear()
        self._inbox.clear()
        with self.lock:
            dropped = self.dispatcher.drop_held()
        if dropped:
            log.info("dropped %d held heads; the broker redelivers them", len(dropped))

    def _session(self, stop: threading.Event) -> None:
        with kombu.Connection(self.settings.amqp_url, heartbeat=30) as conn:
            conn.connect()
            ev_channel = conn.channel()
            ev_channel.basic_qos(0, self.settings.prefetch, False)  # per consumer
            ctl_channel = conn.channel()
            ctl_channel.basic_qos(0, 500, False)
            producer = ConfirmingProducer(conn)
            for profile in self.settings.profiles:
                queue(self.topology.actions_queue_of(profile))(producer.channel).declare()

            completions = queue(self.topology.completions_queue)
            mapping_q = queue(self.topology.mapping_queue_of(uuid.uuid4().hex[:12]))
            kombu.Consumer(
                ctl_channel,
                [completions],
                accept=["json"],
                callbacks=[self._inbox_cb("completion")],
            ).consume()
            kombu.Consumer(
                ctl_channel, [mapping_q], accept=["json"], callbacks=[self._inbox_cb("mapping")]
            ).consume()
            self._events = kombu.Consumer(
                ev_channel,
                [],
                accept=["json"],
                auto_declare=False,
                callbacks=[self._inbox_cb("event")],
            )
            in_flight = self.store.in_flight()
            with self.lock:
                for row in in_flight:
                    self.dispatcher.restore(row.id, row.host, row.vm)
            self._resync()
            self.connected.set()
            log.info(
                "scheduler connected: %d event queues, %d in flight",
                len(self._queues),
                len(self.dispatcher.in_flight),
            )
            while not stop.is_set():
                self._handle_inbox(producer)
                self._dispatch(producer)
                try:
                    conn.drain_events(timeout=0.05)
                except TimeoutError:  # no frame within the wait
                    conn.heartbeat_check()
                self._maybe_resync()
                self._maybe_reconcile()

    def _inbox_cb(self, kind: str) -> Any:
        def callback(body: Any, message: Message) -> None:
            self._inbox.append((kind, body, message))

        return callback

    # -- mapping -------------------------------------------------------------------
    def _resync(self) -> None:
        """Take the whole mapping from the ledger and consume every queue in it."""
        snapshot: MappingSnapshot = self.store.snapshot()
        with self.lock:
            for host, hview in snapshot.hosts.items():
                self.dispatcher.set_host_available(host, hview.available)
                for vm, vview in hview.vms.items():
                    self.dispatcher.set_vm_available(host, vm, vview.available)
                    for policy in vview.policies:
                        self.dispatcher.add_key(host, vm, policy)
        gone = {(h, v) for h, v, _ in self._queues.values()} - {
            (h, v) for h, hv in snapshot.hosts.items() for v in hv.vms
        }
        for host, vm in gone:
            self._remove_vm(host, vm)
        for host, hview in snapshot.hosts.items():
            for vm, vview in hview.vms.items():
                for policy in vview.policies:
                    self._consume(Key(host=host, vm=vm, policy=policy), flush=False)
        if self._events is not None:
            self._events.consume()
        self.mapping_version = snapshot.version
        self._next_resync_check = time.monotonic() + self.settings.resync_interval

    def _maybe_reconcile(self) -> None:
        """Free the slots of in-flight events the ledger says finished: the safety net
        for a completion message that never arrived (workers do not wait for its
        confirm). Cheap: at most MAX_PARALLEL ids."""
        if time.monotonic() < self._next_reconcile:
            return
        self._next_reconcile = time.monotonic() + self.settings.reconcile_interval
        with self.lock:
            ids = list(self.dispatcher.in_flight)
        finished = self.store.finished_among(ids)
        if finished:
            with self.lock:
                for event_id in finished:
                    self.dispatcher.complete(event_id)
            log.info("freed %d slots whose completion never arrived", len(finished))

    def _maybe_resync(self) -> None:
        if time.monotonic() < self._next_resync_check:
            return
        self._next_resync_check = time.monotonic() + self.settings.resync_interval
        if self.store.mapping_version() > self.mapping_version:
            log.warning("mapping moved without us hearing it; resyncing from a snapshot")
            self._resync()

    def _consume(self, key: Key, flush: bool = True) -> None:
        spec = self.topology.event_queue(key)
        if spec.name in self._queues or self._events is None:
            return
        self._queues[spec.name] = (key.host, key.vm, key.policy)
        bound = queue(spec)(self._events.channel)
        bound.declare(nowait=True)  # pipelined; a real problem closes the channel
        self._events.add_queue(bound)
        if flush:
            self._events.consume()

    def _remove_vm(self, host: str, vm: str) -> None:
        """Stop consuming a removed VM's queues, give back any head held, and delete the
        queues if they are empty (the producer refused the removal while events were
        unfinished). Deleting them here, after our own cancel, means the broker never
        cancels a consumer under us."""
        names = [n for n, key in self._queues.items() if key[:2] == (host, vm)]
        for name in names:
            del self._queues[name]
            if self._events is not None:
                self._events.cancel_by_queue(name)
        with self.lock:
            held = self.dispatcher.remove_vm(host, vm)
        for item in held:
            item.handle.requeue()
        if self._events is not None:
            conn = self._events.channel.connection.client
            for name in names:
                channel = conn.channel()  # a refused delete closes only this channel
                try:
                    channel.queue_delete(name, if_empty=True)
                except conn.channel_errors as exc:
                    log.warning("queue %s of removed VM %s kept: %r", name, vm, exc)
                finally:
                    with contextlib.suppress(*conn.channel_errors, *conn.connection_errors):
                        channel.close()

    def _apply_delta(self, delta: MappingDelta) -> None:
        if delta.version <= self.mapping_version:
            return
        if delta.version != self.mapping_version + 1:
            log.warning("mapping delta %d after %d: resyncing", delta.version, self.mapping_version)
            self._resync()
            return
        self.mapping_version = delta.version
        if delta.op == "key_added" and delta.vm and delta.policy:
            with self.lock:
                self.dispatcher.add_key(delta.host, delta.vm, delta.policy)
            self._consume(Key(host=delta.host, vm=delta.vm, policy=delta.policy))
        elif delta.op == "host_availability" and delta.available is not None:
            with self.lock:
                self.dispatcher.set_host_available(delta.host, delta.available)
        elif delta.op == "vm_availability" and delta.vm and delta.available is not None:
            with self.lock:
                self.dispatcher.set_vm_available(delta.host, delta.vm, delta.available)
        elif delta.op == "vm_removed" and delta.vm:
            self._remove_vm(delta.host, delta.vm)

    # -- deliveries ----------------------------------------------------------------
    def _handle_inbox(self, producer: ConfirmingProducer) -> None:
        while self._inbox:
            kind, body, message = self._inbox.popleft()
            try:
                if kind == "event":
                    self._on_event(body, message, producer)
                elif kind == "completion":
                    self._on_completion(body, message)
                else:
                    self._apply_delta(MappingDelta.model_validate(body))
                    message.ack()
            except ValueError:
                log.exception("malformed %s message dropped: %r", kind, body)
                message.reject(requeue=False)

    def _on_completion(self, body: Any, message: Message) -> None:
        done = Completion.model_validate(body)
        with self.lock:
            self.dispatcher.complete(done.event_id)
        message.ack()

    def _on_event(self, body: Any, message: Message, producer: ConfirmingProducer) -> None:
        event = VmEventMessage.model_validate(body)
        if message.delivery_info.get("redelivered"):
            status = self.store.status_of(event.id)
            if status in (Status.DISPATCHED, Status.RUNNING):
                with self.lock:
                    self.dispatcher.restore(event.id, event.host, event.vm)
                if status is Status.DISPATCHED:
                    # the crash may have come before the task was published: publish again
                    self._publish(producer, [event], uuid.uuid4().hex)
                message.ack()
                return
            if status in FINISHED:
                message.ack()
                return
        with self.lock:
            held = self.dispatcher.offer(event, message)
            stale = not held and event.id in self.dispatcher.in_flight
        if not held and stale and self.store.status_of(event.id) in (Status.PENDING, Status.QUEUED):
            # counted in flight but never handed over: take this delivery as the event
            with self.lock:
                self.dispatcher.abort(event.id)
                held = self.dispatcher.offer(event, message)
        if not held:
            log.info("duplicate delivery of event %s acked", event.id)
            message.ack()

    def _dispatch(self, producer: ConfirmingProducer) -> None:
        """Dispatch while the dispatcher gives, a batch at a time: one ledger transaction
        marks the batch dispatched, its tasks are published with confirms pipelined, and
        only then are its events acked."""
        while True:
            with self.lock:
                picks: list[Held[Message]] = []
                while len(picks) < self.settings.dispatch_batch:
                    held = self.dispatcher.pick(time.time())
                    if held is None:
                        break
                    picks.append(held)
            if not picks:
                return
            dispatch_id = uuid.uuid4().hex
            try:
                before = self.store.mark_dispatched_many(
                    [h.event.id for h in picks], dispatch_id, time.time()
                )
                fresh = [h for h in picks if before[h.event.id] is Status.QUEUED]
                self._publish(producer, [h.event for h in fresh], dispatch_id)
            except Exception:
                # the ledger or the broker failed: nothing was handed over for sure, so
                # free the slots; the unacked events come back redelivered
                with self.lock:
                    for h in picks:
                        self.dispatcher.abort(h.event.id)
                raise
            for h in picks:
                if before[h.event.id] is not Status.QUEUED:
                    # a second message for an event another message already carries
                    with self.lock:
                        self.dispatcher.abort(h.event.id)
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
