"""Tests for scheduler.dispatcher.handover: heads in, picks out, with fakes for the
ledger, the broker's deliveries and the confirming producer (no I/O)."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from harness.processes import wait_until
from scheduler.celery_app import create_celery
from scheduler.dispatcher import handover
from scheduler.dispatcher.dispatcher import Dispatcher, Known, Limits
from scheduler.dispatcher.handover import Handover
from scheduler.dispatcher.limits import NamedLimits
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from scheduler.dispatcher.tasks import TaskSender
from shared.models import Action, Status, VmEventMessage
from shared.named_budget import Limited, NamedBudget, NamedUse, Work

Trace = list[tuple[str, Any]]


class FakeStore:
    def __init__(self, trace: Trace, statuses: dict[str, Status] | None = None) -> None:
        self.trace = trace
        self.statuses = statuses or {}
        self.finished_for: float | None = None
        self.lookups: list[str] = []
        self.fail = False
        self.unknown: set[str] = set()  # ids the ledger has no row for
        #: ids the ledger refuses to mark for a named limit, and the named budgets passed
        self.limited: dict[str, Limited] = {}
        self.budgets: list[NamedBudget | None] = []
        #: what named_in_flight answers
        self.use = NamedUse(actions={}, groups={})

    def status_of(self, event_id: str) -> Status | None:
        self.lookups.append(event_id)
        return None if event_id in self.unknown else self.statuses.get(event_id)

    def mark_dispatched_many(
        self,
        event_ids: list[str],
        dispatch_id: str,
        fence: Any = None,
        hosts: Any = (),
        named: NamedBudget | None = None,
    ) -> dict[str, Status | Limited | None]:
        self.trace.append(("mark", list(event_ids)))
        self.budgets.append(named)
        if self.fail:
            raise RuntimeError("ledger down")
        before: dict[str, Status | Limited | None] = {}
        for event_id in event_ids:
            if named is not None and event_id in self.limited:
                before[event_id] = self.limited[event_id]
                continue
            if event_id in self.unknown:
                before[event_id] = None
                continue
            status = self.statuses.get(event_id, Status.QUEUED)
            before[event_id] = status
            if status is Status.QUEUED:
                self.statuses[event_id] = Status.DISPATCHED
        return before

    def named_in_flight(self) -> NamedUse:
        self.trace.append(("count", None))
        return self.use

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


def ev(
    event_id: str, vm: str = "v", policy: str = "p", action: Action = Action.HEAL
) -> VmEventMessage:
    return VmEventMessage(
        id=event_id, host="h", vm=vm, policy=policy, action=action, accepted_at=0.0
    )


class World:
    def __init__(
        self,
        statuses: dict[str, Status] | None = None,
        batch: int = 64,
        grace: float = 60.0,
        named: NamedLimits | None = None,
        shard: bool = False,
    ) -> None:
        self.trace: Trace = []
        self.store = FakeStore(self.trace, statuses)
        self.state: DispatcherState[Any] = DispatcherState(
            Dispatcher(Limits(10, 10, 0), named=named)
        )
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
            shared_named=shard,
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


def test_a_pick_the_ledger_limits_is_held_again_not_acked_and_the_others_use_counted() -> None:
    """On a shard, the mark carries the batch's named-limit work; a pick the ledger
    refuses because the shards together fill a limit gets no task and no ack, waits first
    in line, and the other shards' use is counted at once, so that it is not proposed
    again until that use falls."""
    lm = Action.LIVE_MIGRATE
    w = World(named=NamedLimits(actions={"live_migrate": 2}), shard=True)
    w.store.limited = {"m2": Limited("action", "live_migrate", 2, 2)}
    w.store.use = NamedUse(actions={"live_migrate": 2}, groups={})  # m1, and another's
    w.deliver(ev("m1", "v1", action=lm), "msg-m1")
    w.deliver(ev("m2", "v2", action=lm), "msg-m2")
    w.deliver(ev("x", "v3"), "msg-x")
    w.dispatch()
    assert w.trace == [
        ("mark", ["m1", "m2", "x"]),
        ("publish", "m1"),
        ("publish", "x"),
        ("confirmed", 2),
        ("ack", "msg-m1"),
        ("ack", "msg-x"),
        ("count", None),
    ]
    budget = w.store.budgets[0]
    assert budget is not None and budget.work["m2"] == Work("h", "v2", "p", "live_migrate")
    assert w.state.knows("m2") is Known.HELD
    assert sorted(w.state.in_flight_ids()) == ["m1", "x"]
    assert w.state.limit_holds("h", "v2", "p") == [
        "action limit live_migrate 2/2 (1 on other shards)"
    ]
    w.trace.clear()
    w.dispatch()  # not proposed again
    assert w.trace == []
    w.store.use = NamedUse(actions={"live_migrate": 1}, groups={})  # the other's ended
    w.store.limited = {}
    w.handover.refresh_named()  # the shard's next round
    w.dispatch()
    assert w.trace[-4:] == [
        ("mark", ["m2"]),
        ("publish", "m2"),
        ("confirmed", 1),
        ("ack", "msg-m2"),
    ]


def test_a_head_the_others_hold_is_recounted_at_dispatch_and_goes_once_their_use_falls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a head waits on the other shards' use, each dispatch counts it again (at
    most every NAMED_RECOUNT): the head goes as soon as their use falls, not at the
    shard's next round; with no head waiting on it, nothing is counted."""
    monkeypatch.setattr(handover, "NAMED_RECOUNT", 0.0)
    w = World(named=NamedLimits(actions={"live_migrate": 1}), shard=True)
    w.store.use = NamedUse(actions={"live_migrate": 1}, groups={})  # another shard's
    w.handover.refresh_named()
    w.deliver(ev("m", action=Action.LIVE_MIGRATE), "msg-m")
    w.trace.clear()
    w.dispatch()
    assert w.trace == []  # the gate holds m: the ledger is not asked
    w.dispatch()
    assert w.trace == [("count", None)]  # still theirs: m waits
    w.store.use = NamedUse(actions={}, groups={})
    w.dispatch()
    assert w.trace[1:] == [
        ("count", None),
        ("mark", ["m"]),
        ("publish", "m"),
        ("confirmed", 1),
        ("ack", "msg-m"),
    ]
    w.trace.clear()
    w.dispatch()  # nothing waits on the others: no count
    assert w.trace == []


def test_a_single_dispatcher_passes_no_named_budget() -> None:
    w = World(named=NamedLimits(actions={"live_migrate": 2}))
    w.deliver(ev("m1", action=Action.LIVE_MIGRATE), "msg-m1")
    w.dispatch()
    w.handover.refresh_named()
    assert w.store.budgets == [None]
    assert ("count", None) not in w.trace


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
