"""The dispatcher's AMQP session: connect, consume, run the loop body, reconnect.

One thread owns the connection. Broker callbacks only put deliveries in an inbox; the
loop body handles the inbox, then dispatches while the Dispatcher gives, then waits for
more frames. The jobs live beside this module: :mod:`.mapping` (which queues to consume),
:mod:`.handover` (heads in, picks out), :mod:`.confirms` (pipelined publisher confirms);
the dispatcher itself is reached through :mod:`.state`. Per dispatch, in this order:

1. the ledger marks the event ``dispatched`` (so a restarted dispatcher counts it),
2. the Celery task (id = event id) is published with a confirm,
3. the event's delivery is acked.

A crash between any two steps leaves the event unacked: it is redelivered, and a
redelivered event that the ledger says is ``dispatched`` is published again — the
worker's claim makes that second task message harmless (:mod:`.redelivery`). After the
ack, :mod:`.sweeper` sends again the task of an event that stays unclaimed or whose
worker's claim expires — and, as a session starts, of every event still unclaimed: task
messages are transient (``TASK_PERSISTENT`` off), and the session may have ended because
the broker restarted and dropped them.

The ledger failing (locked, read-only, unreachable) does not end the session: the work
that needs it waits, with capped backoff, while the session keeps its consumers and
heartbeats; the broker failing does end it, and the loop reconnects. Heads wait
unacked for as long as their VM is busy or unavailable, the dispatcher paused, or their
turn far: every ``HEAD_REFRESH_INTERVAL`` all of them are handed back to their queues
at once (one ``basic.nack``, requeue) and delivered again in their place, so that no
delivery outlives the broker's ``consumer_timeout``, which would close the channel and
end the session. Only while the
dispatcher lease surely holds, though: a dispatcher that could not renew it for most of
a lease gives up its session (:class:`LeaseWatch`), so that every head it holds goes back
to its queue before a standby may take the lease and consume those queues — else the
standby would get each key's second event before its first.

With ``DISPATCHER_PARTITIONS`` > 0 the process is a shard instead of a lease holder or
standby: :mod:`.tenure` says which hosts its sessions serve (their queues consumed, their
events restored in flight, their ledger writes fenced by the partitions' leases), and
ends a session when its partitions should move. Each shard also gets every worker task
event on a queue of its own, as each frees only its own events' slots.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from typing import Any

import kombu
import orjson
import sqlalchemy as sa
from celery import Celery
from kombu.message import Message

from scheduler.dispatcher import readiness
from scheduler.dispatcher.confirms import ConfirmingProducer
from scheduler.dispatcher.controls import Controls, LocalControls, SharedControls, Target
from scheduler.dispatcher.handback import hand_back
from scheduler.dispatcher.handover import Handover
from scheduler.dispatcher.mapping import MappingFollower
from scheduler.dispatcher.poison import dead_letter
from scheduler.dispatcher.retirement import Retirement
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.shards import Coordinator
from scheduler.dispatcher.state import DispatcherState
from scheduler.dispatcher.sweeper import Sweeper
from scheduler.dispatcher.tasks import TaskSender
from scheduler.dispatcher.tenure import EXCLUDED, HEARTBEAT, Rebalance, ShardTenure
from shared.backoff import Backoff
from shared.errors import LeaseLost
from shared.fencing import Fence
from shared.kombu_topology import exchange, queue
from shared.lease import DISPATCHER, Lease
from shared.models import MappingDelta
from shared.store import Store
from shared.topology import COMPLETION_EVENT_KEYS

log = logging.getLogger(__name__)

Inbox = deque[tuple[str, Any, Message]]

#: a session that lasted longer than this was a success: the backoff starts again
HEALTHY_SESSION = 10.0
#: the inbox kind of a delivery that could not be decoded (its body is the reason)
UNREADABLE = "unreadable"
#: seconds to wait for a further delivery once one has arrived: only what is already
#: on the socket (a partial frame stays buffered for the next read)
DRAIN_MORE = 0.0005
#: the part of the dispatcher lease that must be left when a session that could not
#: renew it gives up: its heads must be back in their queues before the lease expires
LEASE_MARGIN = 1 / 6


class LeaseWatch:
    """Ends a session whose dispatcher lease may be about to expire.

    ``sure_until`` is a lease from before the last renewal that went through was sent
    (this process's monotonic clock: the lease itself runs on the ledger's, and began
    after that). A thread of its own watches it, because the loop's thread may be stuck
    in a ledger call that hangs: when less than :data:`LEASE_MARGIN` of a lease is left,
    it shuts the session's socket down, and the broker puts every unacked head back."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.sure_until = 0.0
        self._stop = threading.Event()
        self.gave_up = False

    def renewed(self, sent: float) -> None:
        self.sure_until = sent + self.seconds

    def expiring(self, now: float) -> bool:
        return now >= self.sure_until - self.seconds * LEASE_MARGIN

    def watch(self, conn: kombu.Connection) -> None:
        """Watch ``conn``'s session until :meth:`stop`."""
        self._stop.clear()
        self.gave_up = False
        threading.Thread(target=self._run, args=(conn,), name="lease-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, conn: kombu.Connection) -> None:
        while not self._stop.wait(self.seconds / 12):
            if not self.expiring(time.monotonic()):
                continue
            self.gave_up = True
            log.warning(
                "could not renew the dispatcher lease for %.1f s: giving up the session, so "
                "that its held heads go back to their queues before a standby takes over",
                time.monotonic() - (self.sure_until - self.seconds),
            )
            with contextlib.suppress(Exception):
                conn.connection.transport.sock.shutdown(socket.SHUT_RDWR)
            return


class DispatcherLoop:
    def __init__(
        self,
        settings: DispatcherSettings,
        store: Store,
        state: DispatcherState[Message],
        celery: Celery,
    ) -> None:
        self.settings = settings
        self.topology = settings.topology
        self.store = store
        self.state = state
        self.connected = threading.Event()
        name = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        #: only the holder of this lease dispatches; the others wait as standbys
        self.lease = Lease(DISPATCHER, name, settings.dispatcher_lease_seconds)
        self.lease_watch = LeaseWatch(self.lease.seconds)
        #: in shard mode (DISPATCHER_PARTITIONS > 0): the partitions this process serves
        self.shard: ShardTenure | None = None
        #: where the admin API's live changes of limits, classes and weights go
        self.controls: Controls = LocalControls(Target(state, settings))
        if settings.dispatcher_partitions:
            coordinator = Coordinator(
                store.engine,
                name.replace("/", "-"),  # it names a queue too
                settings.dispatcher_partitions,
                settings.dispatcher_lease_seconds,
                settings.max_parallel,
                settings.start_paused,
            )
            target = Target(
                state,
                settings,
                global_limit=lambda: coordinator.limit,
                set_global_limit=lambda limit: setattr(coordinator, "limit", limit),
            )
            self.controls = SharedControls(target, store.engine)
            # each round also counts the other shards' use of the named limits
            self.shard = ShardTenure(
                coordinator,
                state,
                self.lease_watch.renewed,
                target,
                on_round=lambda: self.handover.refresh_named(),
            )
        owns = self.shard.owns if self.shard is not None else None
        # a resync of many keys renews the lease between its rounds
        self.mapping = MappingFollower(settings, store, state, keepalive=self._keepalive, owns=owns)
        tasks = TaskSender(settings, celery)
        # a shard's marks keep the named limits across every shard (shared/named_budget.py)
        self.handover = Handover(
            settings, store, state, tasks, self._dead_letter, shared_named=self.shard is not None
        )
        self.sweeper = Sweeper(settings, store, state, tasks, owns=owns)
        self.retirement = Retirement(
            settings,
            store,
            state,
            self.mapping,
            fence=lambda: None if self.shard is None else self.fence,
        )
        self._inbox: Inbox = deque()
        #: the ledger failed: ledger work waits until this monotonic time
        self._ledger_backoff = Backoff(first=0.1, cap=5.0)
        self._ledger_retry_at = 0.0
        self.ledger_ok = True
        #: messages moved to the dead-letter queue since start (/stats, /metrics)
        self.dead_lettered = 0
        self.active = False
        #: another dispatcher holds the dispatcher lease (the ledger said so)
        self.standby = False
        #: why this dispatcher is not dispatching, while it is not (see not_ready)
        self._why_not = readiness.STARTING
        self._next_renewal = 0.0
        #: whether paused, as this dispatcher last wrote it in its lease row (the
        #: elasticity worker reads it there; every take of the lease writes it): a
        #: change is written at once, not at the next renewal
        self._paused_said = state.paused
        self._role: str | None = None  # the role last logged
        #: when the held heads are next handed back to their queues (monotonic)
        self._next_refresh = 0.0

    @property
    def mapping_version(self) -> int:
        return self.mapping.version

    @property
    def parked(self) -> int:
        return self.handover.parked

    @property
    def resent_total(self) -> int:
        return self.sweeper.resent_total

    @property
    def live_keys(self) -> int:
        return self.mapping.queue_count

    @property
    def retired_total(self) -> int:
        return self.retirement.retired_total

    @property
    def shard_view(self) -> dict[str, Any] | None:
        return None if self.shard is None else self.shard.view()

    @property
    def not_ready(self) -> str | None:
        """None while this dispatcher dispatches (its broker session runs, as the lease
        holder), else why not: a standby, no broker, no ledger (/readyz, /stats)."""
        return None if self.connected.is_set() else self._why_not

    # -- lifecycle -----------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Run sessions until ``stop``, each while holding the dispatcher lease (else wait
        as a standby); reconnect with capped exponential backoff."""
        backoff = Backoff(first=0.2, cap=10.0)
        while not stop.is_set():
            if not self._join():
                stop.wait(self.lease.seconds / 3)
                continue
            started = time.monotonic()
            clean = False
            try:
                self._session(stop)
                clean = True
                delay = _next_delay(backoff, started)
            except Rebalance as move:  # the connection closed cleanly: move at once
                clean = True
                delay = 0.0
                log.info("shard session ended to move partitions: %s", move)
            except Exception as exc:
                delay = _next_delay(backoff, started)
                self._why_not = readiness.session_ended(exc, self.lease_watch.gave_up)
                log.warning("broker session ended: %r; reconnecting in %.1f s", exc, delay)
            finally:
                self._end_session(clean)
            if self.shard is not None:  # its partitions are renewed between sessions too
                delay = min(delay, self.lease.seconds / 3)
            stop.wait(delay)
        with contextlib.suppress(Exception):  # a standby takes over at once, not at expiry
            if self.shard is not None:
                self.shard.leave()
            else:
                self.store.release_lease(self.lease)

    def _join(self) -> bool:
        """Before a session: take the lease, or as a shard, move its partitions."""
        if self.shard is None:
            return self._take_lease()
        try:
            joined = self.shard.join()
        except Exception as exc:
            log.warning("cannot reach the ledger for the shard's partitions: %r", exc)
            self.active = self.standby = False
            self._why_not = readiness.ledger_down(exc)
            self._role = None
            return False
        role = f"shard serving partitions {sorted(self.shard.serving)}" if joined else EXCLUDED
        if role != self._role:
            log.info("dispatcher %s", role)
            self._role = role
        self.active = joined
        self.standby = not joined
        self._why_not = readiness.STARTING if joined else EXCLUDED
        return joined

    def _keepalive(self) -> None:
        if self.shard is None:
            self._maybe_renew()
        else:
            self.shard.keepalive()

    @property
    def fence(self) -> Fence:
        """What the ledger's writes for the hosts this process serves are fenced by."""
        return self.lease if self.shard is None else self.shard.fence()

    def _take_lease(self) -> bool:
        """Take or renew the lease; log the changes of role, not every attempt."""
        sent = time.monotonic()
        paused = self.state.paused
        try:
            held = self.store.take_lease(self.lease, paused)
        except Exception as exc:
            # who holds the lease is unknown: neither active nor, as far as we know, a
            # standby
            log.warning("cannot reach the ledger for the dispatcher lease: %r", exc)
            self.active = self.standby = False
            self._why_not = readiness.ledger_down(exc)
            self._role = None  # the role is logged again once the ledger answers
            return False
        if held:
            self.lease_watch.renewed(sent)
            self._paused_said = paused
        self._set_role(held)
        return held

    def _set_role(self, held: bool) -> None:
        role = "active" if held else readiness.STANDBY
        if role != self._role:
            log.info("dispatcher %s", role)
            self._role = role
            if held:  # until its session is up
                self._why_not = readiness.STARTING
        if not held:
            self._why_not = readiness.STANDBY
        self.active = held
        self.standby = not held
        self._next_renewal = time.monotonic() + self.lease.seconds / 3

    def _maybe_renew(self) -> None:
        """Renew the lease in session — when due, or at once when the dispatcher was
        paused or resumed, which the renewal records; a ledger error propagates (the
        session waits for the ledger), losing the lease to another dispatcher ends the
        session. A shard has its round instead (:meth:`.tenure.ShardTenure.maybe_round`)."""
        if self.shard is not None:
            self.shard.maybe_round()
            return
        paused = self.state.paused
        if time.monotonic() < self._next_renewal and paused == self._paused_said:
            return
        sent = time.monotonic()
        held = self.store.take_lease(self.lease, paused)
        if held:
            self.lease_watch.renewed(sent)
            self._paused_said = paused
        self._set_role(held)
        if not held:
            raise LeaseLost("another dispatcher took the dispatcher lease")

    def _end_session(self, clean: bool) -> None:
        """``clean``: the connection was closed, not lost (the broker has every head
        this session held back in its queue)."""
        self.lease_watch.stop()
        self.connected.clear()
        self.active = False  # until the lease is taken again
        self.mapping.detach()
        self._inbox.clear()
        dropped = len(self.state.drop_held()) + len(self.handover.drop_parked())
        if dropped:
            log.info("dropped %d held heads; the broker redelivers them", dropped)
        if self.shard is not None:
            self.shard.session_ended(clean)

    def _session(self, stop: threading.Event) -> None:
        with kombu.Connection(self.settings.amqp_url, heartbeat=HEARTBEAT) as conn:
            conn.connect()
            self.lease_watch.watch(conn)
            ev_channel = conn.channel()
            ev_channel.basic_qos(0, self.settings.prefetch, False)  # per consumer
            ctl_channel = conn.channel()
            ctl_channel.basic_qos(0, 500, False)
            producer = ConfirmingProducer(conn)
            for profile in self.settings.profiles:
                queue(self.topology.actions_queue_of(profile))(producer.channel).declare()

            completions = queue(self.topology.completions_queue)
            if self.shard is not None:  # every task event: the shared queue would split them
                self._route_task_events(ctl_channel, completions, bind=False)
                completions = queue(self.topology.shard_completions_queue(self.shard.name))
            self._route_task_events(ctl_channel, completions)
            mapping_q = queue(self.topology.mapping_queue_of(uuid.uuid4().hex[:12]))
            self._consumer(ctl_channel, [completions], "completion").consume()
            self._consumer(ctl_channel, [mapping_q], "mapping").consume()
            self.mapping.attach(self._consumer(ev_channel, [], "event", auto_declare=False))
            rows = self.store.in_flight()  # the ledger's, before taking the dispatcher's lock
            if self.shard is not None:
                rows = [row for row in rows if self.shard.owns(row.host)]
            self.state.restore((row.id, row.host, row.vm, row.action, row.group) for row in rows)
            self.mapping.resync()
            # a broker restart took the transient task messages with it: send them again
            self.sweeper.resend_unclaimed(producer, self.fence)
            self.connected.set()
            log.info(
                "dispatcher connected: %d event queues, %d in flight",
                self.mapping.queue_count,
                self.state.in_flight_count(),
            )
            self._next_refresh = time.monotonic() + self.settings.head_refresh_interval
            try:
                while not stop.is_set():
                    self._ledger_work(producer)
                    self._maybe_refresh_heads(ev_channel)
                    self._drain(conn)
            except Rebalance:
                _close(conn)
                raise
            _close(conn)

    def _maybe_refresh_heads(self, channel: Any) -> None:
        """Every ``HEAD_REFRESH_INTERVAL``, hand every delivery of the event channel this
        process holds back to its queue: one ``basic.nack`` (multiple, requeue) through
        the highest of their tags (:func:`.handback.hand_back`: a delivery on its way is
        not one of them) — a nack, not a reject, which RabbitMQ 4.3+ counts against a
        quorum queue's delivery limit. Each queue puts its head back in front and, its
        consumer still there, delivers it again at once (redelivered: the ledger says it
        is still queued, and it is held again). Held copies of events already in flight
        are acked first."""
        interval = self.settings.head_refresh_interval
        if not interval or time.monotonic() < self._next_refresh:
            return
        self._next_refresh = time.monotonic() + interval
        for copy in self.state.take_duplicates():
            copy.handle.ack()
        held = [h.handle for h in (*self.state.drop_held(), *self.handover.drop_parked())]
        # deliveries of the channel not handled yet go back too: forget them
        unhandled = [item[2] for item in self._inbox if item[2].channel is channel]
        self._inbox = deque(item for item in self._inbox if item[2].channel is not channel)
        hand_back(channel, [m.delivery_tag for m in (*held, *unhandled)])
        log.info("handed %d held heads back to their queues (HEAD_REFRESH_INTERVAL)", len(held))

    def _drain(self, conn: kombu.Connection) -> None:
        """Wait up to 50 ms for a delivery, then take every one that has arrived
        meanwhile (up to DISPATCH_BATCH): one round of ledger work then serves them all
        — one transaction and one round of confirms for a batch, not for each event."""
        try:
            conn.drain_events(timeout=0.05)
        except TimeoutError:  # no frame within the wait
            conn.heartbeat_check()
            return
        while len(self._inbox) < self.settings.dispatch_batch:
            try:
                conn.drain_events(timeout=DRAIN_MORE)
            except TimeoutError:  # nothing more has arrived
                return

    def _route_task_events(self, channel: Any, completions: kombu.Queue, bind: bool = True) -> None:
        """The workers' task events end up in the completions queue: a task-succeeded
        event is the completion of its event (see :func:`.handover.completed_ids`). Not
        ``bind``: a shard's unbinding of the shared completions queue (a single
        dispatcher binds it again as its session starts), so that none piles up there
        while shards run, and no shard decodes each task event twice."""
        completions(channel).declare()
        events = exchange(self.topology.events_exchange)(channel)
        events.declare()
        route = channel.queue_bind if bind else channel.queue_unbind
        for key in COMPLETION_EVENT_KEYS:
            route(completions.name, events.name, key)

    def _ledger_work(self, producer: ConfirmingProducer) -> None:
        """One round of everything that needs the ledger. If the ledger fails, nothing
        is lost (an inbox item goes back, picks are held again) and the round is tried
        again after a capped backoff; the broker session goes on meanwhile."""
        if time.monotonic() < self._ledger_retry_at:
            return
        started = time.monotonic()
        try:
            self._maybe_renew()
            self._handle_inbox(producer)
            self.handover.dispatch(producer, self.fence)
            self.mapping.maybe_resync()
            self.handover.maybe_reconcile()
            self.handover.maybe_retry_parked(producer)
            self.sweeper.ledger_was_slow(time.monotonic() - started)
            self.sweeper.maybe_sweep(producer, self.fence)
            self.retirement.maybe_retire(producer)
        except sa.exc.DBAPIError as exc:
            self.sweeper.ledger_failed()
            delay = self._ledger_backoff.next()
            self._ledger_retry_at = time.monotonic() + delay
            self.ledger_ok = False
            log.warning("the ledger failed: %s; retrying in %.1f s", exc.orig, delay)
            return
        if not self.ledger_ok:
            log.info("the ledger is back")
        self.ledger_ok = True
        self._ledger_backoff.reset()

    def _consumer(
        self, channel: Any, queues: list[kombu.Queue], kind: str, **options: Any
    ) -> kombu.Consumer:
        """A JSON consumer whose deliveries go to the inbox as ``kind``; one that cannot
        be decoded goes there as unreadable, with the reason, instead of raising.

        It decodes with orjson, not kombu's registry: a worker's batch of task events
        (three per task, a completion among them) decoded with the standard library's json
        and kombu's object hook was a large share of the dispatcher's CPU (``make bench
        BENCH=profile``)."""

        def on_message(message: Message) -> None:
            try:
                body = _json_of(message)
            except ValueError as exc:
                self._inbox.append((UNREADABLE, f"undecodable {kind} message: {exc}", message))
                return
            self._inbox.append((kind, body, message))

        return kombu.Consumer(channel, queues, on_message=on_message, **options)

    def _handle_inbox(self, producer: ConfirmingProducer) -> None:
        self.handover.check_completions(
            [body for kind, body, _ in self._inbox if kind == "completion"]
        )
        while self._inbox:
            kind, body, message = self._inbox.popleft()
            try:
                self._handle(producer, kind, body, message)
            except sa.exc.DBAPIError:
                self._inbox.appendleft((kind, body, message))  # handled again later
                raise
            except ValueError as exc:  # not a valid message of its kind (pydantic says why)
                self._dead_letter(producer, message, f"invalid {kind} message: {exc}")

    def _handle(self, producer: ConfirmingProducer, kind: str, body: Any, message: Message) -> None:
        if kind == "event":
            self.handover.on_event(body, message, producer)
        elif kind == "completion":
            self.handover.on_completion(body, message)
        elif kind == "mapping":
            self.mapping.apply(MappingDelta.model_validate(body))
            message.ack()
        else:
            self._dead_letter(producer, message, body)

    def _dead_letter(self, producer: ConfirmingProducer, message: Message, reason: str) -> None:
        dead_letter(producer, self.topology.dead_letter_queue, message, reason)
        message.ack()
        self.dead_lettered += 1
        log.warning("moved a message to %s: %s", self.topology.dead_letter_queue.name, reason)


def _json_of(message: Message) -> Any:
    """The body of a JSON message (UTF-8, uncompressed, as every sender of Carousel's
    and Celery's writes it); ValueError says why another is not one."""
    if message.content_type != "application/json":
        raise ValueError(f"content type {message.content_type!r} is not application/json")
    if (message.headers or {}).get("compression"):
        raise ValueError("compressed bodies are not accepted")
    try:
        return orjson.loads(message.body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def _close(conn: kombu.Connection) -> None:
    """Close the session's connection and wait for the broker's close-ok, by which it has
    every head the session held back in its queue; raise if it cannot say so (kombu's
    own close, on leaving the ``with``, swallows errors), so that a shard gives up no
    partition after a close the broker may not have seen."""
    conn.connection.close()


def _next_delay(backoff: Backoff, started: float) -> float:
    if time.monotonic() - started > HEALTHY_SESSION:
        backoff.reset()
    return backoff.next()
