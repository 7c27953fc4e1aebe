"""Tests for scheduler.dispatcher.handover: heads in, picks out, with fakes for the
ledger, the broker's deliveries and the confirming producer (no I/O)."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from harness.processes import wait_until
from scheduler.celery_app import create_celery
from scheduler.dispatcher.dispatcher import Dispatcher, Known, Limits
from scheduler.dispatcher.handover import Handover
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from scheduler.dispatcher.tasks import TaskSender
from shared.models import Action, Status, VmEventMessage

Trace = list[tuple[str, Any]]


class FakeStore:
    def __init__(self, trace: Trace, statuses: dict[str, Status] | None = None) -> None:
        self.trace = trace
        self.statuses = statuses or {}
        self.finished_for: float | None = None
        self.lookups: list[str] = []
        self.fail = False
        self.unknown: set[str] = set()  # ids the ledger has no row for

    def status_of(self, event_id: str) -> Status | None:
        self.lookups.append(event_id)
        return None if event_id in self.unknown else self.statuses.get(event_id)

    def mark_dispatched_many(
        self, event_ids: list[str], dispatch_id: str, fence: Any = None, hosts: Any = ()
    ) -> dict[str, Status | None]:
        self.trace.append(("mark", list(event_ids)))
        if self.fail:
            raise RuntimeError("ledger down")
        before: dict[str, Status | None] = {}
        for event_id in event_ids:
            if event_id in self.unknown:
                before[event_id] = None
                continue
            status = self.statuses.get(event_id, Status.QUEUED)
            before[event_id] = status
            if status is Status.QUEUED:
                self.statuses[event_id] = Status.DISPATCHED
        return before

    def finished_among(self, event_ids: list[str], finished_for: float | None = None) -> list[str]:
        self.finished_for = finished_for
        done = {Status.SUCCEEDED, Status.FAILED}
        return [i for i in event_ids if self.statuses.get(i) in done]


class FakeMessage:
    def __init__(self, trace: Trace, name: str, redelivered: bool = False) -> None:
        self.trace = trace
        self.name = name
        self.delivery_info = {"redelivered": redelivered}

    def ack(self) -> None:
        self.trace.append(("ack", self.name))


class FakeCelery:
    """Builds the task messages as Celery does; publishing them records them."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.task_ids: list[str] = []
        self.amqp = create_celery(DispatcherSettings()).amqp

    def publish(self, body: Any, headers: dict[str, Any], **kwargs: Any) -> None:
        args, _, _ = body
        self.trace.append(("publish", args[0]["id"]))
        self.task_ids.append(headers["id"])


class FakeProducer:
    def __init__(self, trace: Trace, celery: FakeCelery) -> None:
        self.trace = trace
        self.celery = celery
        self.fail = False

    def publish_all(self, sends: list[Any]) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        for send in sends:
            send(self.celery)
        self.trace.append(("confirmed", len(sends)))


def ev(event_id: str, vm: str = "v", policy: str = "p") -> VmEventMessage:
    return VmEventMessage(
        id=event_id, host="h", vm=vm, policy=policy, action=Action.HEAL, accepted_at=0.0
    )


class World:
    def __init__(
        self, statuses: dict[str, Status] | None = None, batch: int = 64, grace: float = 60.0
    ) -> None:
        self.trace: Trace = []
        self.store = FakeStore(self.trace, statuses)
        self.state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 10, 0)))
        settings = DispatcherSettings(
            dispatch_batch=batch, reconcile_interval=5.0, unknown_event_grace=grace
        )
        self.celery = FakeCelery(self.trace)
        self.producer = FakeProducer(self.trace, self.celery)
        self.handover = Handover(
            settings,
            cast(Any, self.store),
            self.state,
            TaskSender(settings, cast(Any, self.celery)),
            lambda producer, message, reason: self.trace.append(
                ("dead", cast(FakeMessage, message).name)
            ),
        )

    def deliver(self, event: VmEventMessage, name: str, redelivered: bool = False) -> None:
        message = FakeMessage(self.trace, name, redelivered)
        self.handover.on_event(
            event.model_dump(mode="json"), cast(Any, message), cast(Any, self.producer)
        )

    def dispatch(self) -> None:
        self.handover.dispatch(cast(Any, self.producer))


# -- heads in ----------------------------------------------------------------------------


def test_a_first_delivery_is_held_without_asking_the_ledger() -> None:
    w = World()
    w.deliver(ev("a"), "m")
    assert w.state.knows("a") is Known.HELD
    assert w.trace == []
    assert w.store.lookups == []


def test_a_second_delivery_of_a_held_event_is_acked_as_a_duplicate() -> None:
    w = World()
    w.deliver(ev("a"), "m1")
    w.deliver(ev("a"), "m2")
    assert w.trace == [("ack", "m2")]
    assert w.store.lookups == []


@pytest.mark.parametrize("known", ["new", "held"])
def test_redelivered_dispatched_is_counted_republished_and_acked(known: str) -> None:
    w = World({"a": Status.DISPATCHED})
    if known == "held":
        w.deliver(ev("a"), "held")
    w.deliver(ev("a"), "m", redelivered=True)
    assert w.trace == [("publish", "a"), ("confirmed", 1), ("ack", "m")]
    assert w.celery.task_ids[0].startswith("a~")  # a new task id: the first may be revoked
    assert w.state.knows("a") is Known.IN_FLIGHT
    assert w.state.stats()["dispatched_total"] == 0  # counted, not offered


def test_redelivered_running_is_counted_and_acked() -> None:
    w = World({"a": Status.RUNNING})
    w.deliver(ev("a"), "m", redelivered=True)
    assert w.trace == [("ack", "m")]
    assert w.state.in_flight_ids() == ["a"]


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
def test_redelivered_finished_is_acked(status: Status) -> None:
    w = World({"a": status})
    w.deliver(ev("a"), "m", redelivered=True)
    assert w.trace == [("ack", "m")]
    assert w.state.knows("a") is Known.NEW


@pytest.mark.parametrize("status", [None, Status.PENDING, Status.QUEUED])
def test_redelivered_not_yet_handed_over_is_held(status: Status | None) -> None:
    w = World({} if status is None else {"a": status})
    w.deliver(ev("a"), "m", redelivered=True)
    assert w.trace == []
    assert w.state.knows("a") is Known.HELD
    assert w.store.lookups == ["a"]


@pytest.mark.parametrize("redelivered", [False, True])
def test_a_stale_in_flight_count_is_replaced_by_the_delivery(redelivered: bool) -> None:
    w = World({"a": Status.QUEUED})
    w.state.restore([("a", "h", "v")])  # picked, never handed over
    w.deliver(ev("a"), "m", redelivered=redelivered)
    assert w.trace == []
    assert w.state.knows("a") is Known.HELD
    assert w.store.lookups == ["a"]  # looked up once


def test_a_delivery_of_an_event_handed_over_is_a_duplicate() -> None:
    w = World()
    w.deliver(ev("a"), "m1")
    w.dispatch()
    w.trace.clear()
    w.deliver(ev("a"), "m2")
    assert w.trace == [("ack", "m2")]
    assert w.state.in_flight_ids() == ["a"]


def test_a_stale_replacement_refused_is_acked_as_a_duplicate() -> None:
    w = World({"a": Status.QUEUED})
    w.deliver(ev("a"), "held")
    w.state.restore([("a", "h", "v")])  # in flight and held at once
    w.deliver(ev("a"), "m")
    assert w.trace == [("ack", "m")]


def test_completion_frees_the_slot() -> None:
    w = World()
    w.deliver(ev("a"), "m")
    w.dispatch()
    w.store.statuses["a"] = Status.SUCCEEDED  # the worker recorded it, then its task ended
    done = _task_event("task-succeeded", "a")
    w.handover.on_completion(done, cast(Any, FakeMessage(w.trace, "c")))
    assert w.state.in_flight_ids() == []
    assert w.trace[-1] == ("ack", "c")


@pytest.mark.parametrize("status", [Status.DISPATCHED, Status.RUNNING, None])
def test_a_completion_the_ledger_does_not_back_frees_nothing(status: Status | None) -> None:
    """Forged on the broker, or for another event: acked, and the slot stays taken."""
    w = World()
    w.deliver(ev("a"), "m")
    w.dispatch()
    if status is None:
        del w.store.statuses["a"]
    else:
        w.store.statuses["a"] = status
    done = _task_event("task-succeeded", "a")
    w.handover.on_completion(done, cast(Any, FakeMessage(w.trace, "c")))
    assert w.state.in_flight_ids() == ["a"]
    assert w.trace[-1] == ("ack", "c")


def _task_event(kind: str, task_id: str) -> dict[str, Any]:
    """A task event as a Celery worker sends it (the fields the dispatcher reads)."""
    return {"type": kind, "uuid": task_id, "hostname": "w@h", "timestamp": time.time()}


def test_a_workers_batch_of_task_events_frees_the_slots_of_the_tasks_that_ended() -> None:
    """Prefork workers send their task events in batches (``task.multi``): the events
    that end a task free their event's slot, once the ledger backs them; received and
    started events free nothing; a resent task's id names its event before the ``~``."""
    w = World()
    for name in ("a", "b", "c"):
        w.deliver(ev(name, vm=name), f"m{name}")
    w.dispatch()
    w.store.statuses.update(a=Status.SUCCEEDED, b=Status.FAILED, c=Status.RUNNING)
    batch = [
        _task_event("task-received", "a"),
        _task_event("task-started", "a"),
        _task_event("task-succeeded", "a"),
        _task_event("task-succeeded", "b~0123456789ab"),
        _task_event("task-succeeded", "c"),  # a message that skipped a held event
    ]
    w.handover.check_completions([batch])
    w.handover.on_completion(batch, cast(Any, FakeMessage(w.trace, "events")))
    assert w.state.in_flight_ids() == ["c"]
    assert w.trace[-1] == ("ack", "events")


@pytest.mark.parametrize(
    "body",
    [
        "text",
        ["not an event"],
        [{"type": "task-succeeded"}],  # no task id
        {"status": "succeeded"},  # not an event
        # a completion message of the worker's own, which workers no longer send
        {"event_id": "a", "host": "h", "vm": "v", "policy": "p", "status": "succeeded"},
    ],
)
def test_a_completion_queue_message_of_no_known_shape_is_refused(body: Any) -> None:
    """What the completions queue cannot read raises ValueError: the loop dead-letters it."""
    w = World()
    with pytest.raises(ValueError):
        w.handover.on_completion(body, cast(Any, FakeMessage(w.trace, "x")))
    assert ("ack", "x") not in w.trace


def test_reconcile_frees_slots_the_ledger_says_finished() -> None:
    w = World()
    w.state.restore([("a", "h", "v1"), ("b", "h", "v2")])
    w.store.statuses.update(a=Status.SUCCEEDED, b=Status.RUNNING)
    w.handover.maybe_reconcile()
    assert w.state.in_flight_ids() == ["b"]
    # only events finished a reconcile interval ago: a newer one's completion is on its way
    assert w.store.finished_for == 5.0  # the reconcile interval
    w.store.statuses["b"] = Status.FAILED
    w.handover.maybe_reconcile()  # not due yet
    assert w.state.in_flight_ids() == ["b"]


# -- picks out ---------------------------------------------------------------------------


def test_dispatch_marks_then_publishes_then_acks_a_batch_at_a_time() -> None:
    w = World(batch=2)
    for i in range(3):
        w.deliver(ev(f"e{i}", vm=f"v{i}"), f"m{i}")
    w.dispatch()
    assert w.trace == [
        ("mark", ["e0", "e1"]),
        ("publish", "e0"),
        ("publish", "e1"),
        ("confirmed", 2),
        ("ack", "m0"),
        ("ack", "m1"),
        ("mark", ["e2"]),
        ("publish", "e2"),
        ("confirmed", 1),
        ("ack", "m2"),
    ]
    assert sorted(w.state.in_flight_ids()) == ["e0", "e1", "e2"]


def test_dispatch_acks_without_publishing_an_event_dispatched_already() -> None:
    w = World({"dup": Status.DISPATCHED})
    w.deliver(ev("dup"), "m1")
    w.deliver(ev("new", vm="v2"), "m2")
    w.dispatch()
    assert w.trace == [
        ("mark", ["dup", "new"]),
        ("publish", "new"),
        ("confirmed", 1),
        ("ack", "m1"),
        ("ack", "m2"),
    ]
    assert w.state.in_flight_ids() == ["new"]
    assert [d["event_id"] for d in w.state.recent_dispatches(10)] == ["new"]


def test_a_cancelled_head_is_acked_without_a_task_its_slot_freed_and_its_key_moves_on() -> None:
    """The ledger refuses to mark a cancelled event: its message is acked, no task is
    sent, the slot is not kept, and the key's next event goes in the same round."""
    w = World({"c": Status.CANCELLED})
    w.state.set_limits({"max_parallel": 1})
    w.deliver(ev("c"), "m1")
    w.dispatch()
    assert w.trace == [("mark", ["c"]), ("confirmed", 0), ("ack", "m1")]
    assert w.state.in_flight_ids() == []
    stats = w.state.stats()
    assert (stats["dispatched_total"], stats["held"]) == (0, 0)
    assert w.state.recent_dispatches(10) == []
    w.deliver(ev("next"), "m2")  # the queue's next head, after the ack
    w.dispatch()
    assert w.trace[-4:] == [
        ("mark", ["next"]),
        ("publish", "next"),
        ("confirmed", 1),
        ("ack", "m2"),
    ]
    assert w.state.in_flight_ids() == ["next"]


def test_a_ledger_failure_holds_the_picks_again_first_in_line_and_acks_nothing() -> None:
    """The session goes on while the ledger is down: the picks wait, in their order."""
    w = World()
    w.deliver(ev("a"), "m1")
    w.deliver(ev("b"), "m2")  # same key, behind a (prefetch 2)
    w.store.fail = True
    with pytest.raises(RuntimeError):
        w.dispatch()
    assert w.trace == [("mark", ["a", "b"])]
    assert w.state.in_flight_ids() == []
    assert (w.state.knows("a"), w.state.knows("b")) == (Known.HELD, Known.HELD)
    w.store.fail = False
    w.trace.clear()
    w.dispatch()
    assert w.trace[0] == ("mark", ["a", "b"])  # in their order
    assert w.trace[-2:] == [("ack", "m1"), ("ack", "m2")]


def test_a_broker_failure_frees_the_slots_and_acks_nothing() -> None:
    w = World()
    w.deliver(ev("a"), "m")
    w.producer.fail = True
    with pytest.raises(ConnectionError):
        w.dispatch()
    assert w.trace == [("mark", ["a"])]
    assert w.state.in_flight_ids() == []


# -- parked: unknown to the ledger -------------------------------------------------------


def test_an_event_the_ledger_does_not_know_is_parked_not_acked() -> None:
    """The producer's discard raced a retry that will confirm the row again: acking the
    message as a duplicate would lose the event."""
    w = World()
    w.store.unknown.add("a")
    w.deliver(ev("a"), "m")
    w.dispatch()
    assert w.trace == [("mark", ["a"]), ("confirmed", 0)]
    assert w.handover.parked == 1
    assert w.state.in_flight_ids() == []  # no slot taken while parked
    w.handover.maybe_retry_parked(cast(Any, w.producer))
    assert w.handover.parked == 1  # still unknown, within the grace
    w.store.unknown.clear()  # the retry's confirm wrote the row
    w.store.statuses["a"] = Status.QUEUED
    w.handover._next_parked = 0.0
    w.handover.maybe_retry_parked(cast(Any, w.producer))
    w.trace.clear()
    w.dispatch()
    assert w.trace == [("mark", ["a"]), ("publish", "a"), ("confirmed", 1), ("ack", "m")]


def test_a_parked_event_carried_by_another_message_is_acked() -> None:
    w = World()
    w.store.unknown.add("a")
    w.deliver(ev("a"), "m")
    w.dispatch()
    w.store.unknown.clear()
    w.store.statuses["a"] = Status.RUNNING
    w.handover.maybe_retry_parked(cast(Any, w.producer))
    assert w.trace[-1] == ("ack", "m")
    assert w.handover.parked == 0


def test_a_parked_event_unknown_past_the_grace_is_dead_lettered() -> None:
    w = World(grace=0.001)
    w.store.unknown.add("a")
    w.deliver(ev("a"), "m")
    w.dispatch()
    wait_until(
        lambda: w.handover.maybe_retry_parked(cast(Any, w.producer)) or not w.handover.parked
    )
    assert w.trace[-1] == ("dead", "m")


def test_a_new_session_drops_the_parked_deliveries() -> None:
    w = World()
    w.store.unknown.add("a")
    w.deliver(ev("a"), "m")
    w.dispatch()
    assert [h.event.id for h in w.handover.drop_parked()] == ["a"]
    assert w.handover.parked == 0
