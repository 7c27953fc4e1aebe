"""The control loop's adapter logic with an in-memory provider, a tracker fed events by
hand and a fake remote control: no broker, no processes, time passed in."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from scheduler.elasticity.engine import Engine
from scheduler.elasticity.errors import (
    InsufficientResources,
    MinimumWorkersReached,
    NoIdleWorkersError,
    NoTearDownTargets,
)
from scheduler.elasticity.model import Backlog, Condition, ProfileConfig, WorkerState
from scheduler.elasticity.tracker import WorkerTracker
from tests.unit.elasticity_doubles import (
    Clock,
    FakeControl,
    InMemoryProvider,
)


def make(
    backlog: dict[str, int],
    provider: InMemoryProvider | None = None,
    dry_run: bool = False,
    shrink_hold: bool = True,
    **profile: Any,
) -> tuple[Engine, WorkerTracker, Clock]:
    clock = Clock()
    tracker = WorkerTracker(app=None)
    cfg = {"min_workers": 1, "max_workers": 4, "scale_down_window": 0, **profile}
    if not shrink_hold:  # no pool is ever *more* than fully busy: the band never holds
        cfg["scale_down_utilisation"] = 1.0
    configs = {p: ProfileConfig(name=p, **cfg) for p in backlog}
    engine = Engine(
        configs=configs,
        budget=8,
        provider=provider or InMemoryProvider(),
        tracker=tracker,
        control=FakeControl(),  # type: ignore[arg-type]
        queue_of=lambda p: f"q.{p}",
        backlog_of=lambda p, running: Backlog(backlog[p]),
        dry_run=dry_run,
        clock=clock,
    )
    return engine, tracker, clock


def register_all(engine: Engine, tracker: WorkerTracker, now: float, active: int = 0) -> None:
    for name in engine.handles:
        tracker.on_event({"type": "worker-heartbeat", "hostname": name, "active": active}, now)


def test_reaches_the_minimum_and_is_ready_once_registered() -> None:
    engine, tracker, clock = make({"default": 0})
    assert not engine.ready()
    engine.tick()
    assert len(engine.handles) == 1 and engine.is_booting(next(iter(engine.handles)))
    register_all(engine, tracker, clock.now)
    assert engine.ready()


def test_dry_run_decides_but_never_acts() -> None:
    provider = InMemoryProvider()
    engine, _, _ = make({"default": 100}, provider=provider, dry_run=True)
    decisions = engine.tick()
    assert decisions[0].spawn == 4  # it would
    assert provider.running == {} and engine.handles == {}  # it did not


def test_a_failing_profile_does_not_stop_the_others() -> None:
    engine, _, _ = make({"broken": 50, "fine": 50}, provider=InMemoryProvider(fail_for={"broken"}))
    engine.tick()
    assert {h.profile for h in engine.handles.values()} == {"fine"}
    kinds = {(e.profile, e.kind) for e in engine.events}
    assert ("broken", "error") in kinds and ("fine", "spawned") in kinds
    engine.tick()  # and the loop goes on
    assert sum(h.profile == "fine" for h in engine.handles.values()) == 4


def test_only_idle_workers_are_retired_and_busy_ones_keep_their_task() -> None:
    backlog = {"default": 100}
    # the utilisation band off: this is about which workers go when the pool shrinks
    engine, tracker, clock = make(backlog, shrink_hold=False)
    engine.tick()
    register_all(engine, tracker, clock.now, active=1)
    names = sorted(engine.handles)
    backlog["default"] = 0
    clock.now += 5
    engine.tick()  # all busy: nothing may go
    assert len(engine.handles) == 4
    assert any(e.kind == "NoIdleWorkersError" for e in engine.events)
    for name in names[:2]:  # two become idle
        tracker.on_event({"type": "worker-heartbeat", "hostname": name, "active": 0}, clock.now)
    clock.now += 5
    engine.tick()
    assert set(engine.draining) == set(names[:2])
    control = engine.control
    assert isinstance(control, FakeControl)
    assert ("shutdown", names[0]) in control.calls and ("shutdown", names[2]) not in control.calls


def test_retire_is_aborted_when_a_task_slipped_in() -> None:
    backlog = {"default": 30}
    engine, tracker, clock = make(backlog)
    engine.tick()
    register_all(engine, tracker, clock.now)
    control = engine.control
    assert isinstance(control, FakeControl)
    control.busy = set(engine.handles)  # every worker took a task after the heartbeat
    backlog["default"] = 0
    clock.now += 5
    engine.tick()
    assert engine.draining == {}
    assert any(c[0] == "add" for c in control.calls)
    assert not any(c[0] == "shutdown" for c in control.calls)


@pytest.mark.parametrize("gone", ["exited", "silent"])
def test_a_lost_worker_is_replaced(gone: str) -> None:
    provider = InMemoryProvider()
    engine, tracker, clock = make({"default": 0}, provider=provider)
    engine.tick()
    register_all(engine, tracker, clock.now)
    [first] = engine.handles
    if gone == "exited":
        del provider.running[first]  # kill -9: the process is gone
    else:
        clock.now += engine.heartbeat_timeout + 1  # hung: heartbeats stopped
    engine.tick()
    assert first not in engine.handles and len(engine.handles) == 1
    assert any(e.kind == "lost" for e in engine.events)


def test_a_gap_in_our_own_event_stream_kills_nobody() -> None:
    """Our stream reconnecting (a broker blip) silences every worker at once: that is no
    worker's death. Heartbeats are judged again a full timeout after the stream is back."""
    provider = InMemoryProvider()
    engine, tracker, clock = make({"default": 0}, provider=provider)
    engine.tick()
    register_all(engine, tracker, clock.now)
    [first] = engine.handles
    tracker.stream_down()
    clock.now += engine.heartbeat_timeout * 3  # silent for three timeouts
    engine.tick()
    assert first in engine.handles and provider.stopped == []
    tracker.stream_up(clock.now)  # back; no heartbeat yet
    clock.now += engine.heartbeat_timeout / 2
    engine.tick()
    assert first in engine.handles and provider.stopped == []
    clock.now += engine.heartbeat_timeout  # back long enough, and still silent: lost
    engine.tick()
    assert first not in engine.handles and (first, False) in provider.stopped


def test_a_silent_worker_that_answers_a_ping_is_not_killed() -> None:
    provider = InMemoryProvider()
    engine, tracker, clock = make({"default": 0}, provider=provider)
    engine.tick()
    register_all(engine, tracker, clock.now)
    [first] = engine.handles
    control = engine.control
    assert isinstance(control, FakeControl)
    control.alive.add(first)  # starved of CPU, say: no heartbeat, but it answers
    clock.now += engine.heartbeat_timeout + 1
    engine.tick()
    assert first in engine.handles and provider.stopped == []
    assert ("ping", first) in control.calls
    assert any(e.kind == "answered" for e in engine.events)
    assert [w.state for w in engine.workers("default")] != [WorkerState.LOST]


def test_slacker_is_killed_and_replaced() -> None:
    provider = InMemoryProvider()
    engine, _, clock = make({"default": 0}, provider=provider)
    engine.tick()
    [first] = engine.handles
    clock.now += engine.slacker_threshold + 1
    engine.tick()
    assert (first, False) in provider.stopped
    assert first not in engine.handles and len(engine.handles) == 1


def test_conditions_keep_the_names_status_shows() -> None:
    assert [c.value for c in Condition] == [
        "InsufficientResources",
        "MinimumWorkersReached",
        "NoIdleWorkersError",
        "NoTearDownTargets",
        "ScalingInProgress",
    ]
    for error in (
        InsufficientResources,
        MinimumWorkersReached,
        NoIdleWorkersError,
        NoTearDownTargets,
    ):
        assert error.condition == error.__name__


def test_an_action_held_back_is_noted_by_its_condition() -> None:
    engine, tracker, clock = make({"default": 0})
    engine.tick()
    register_all(engine, tracker, clock.now)
    with pytest.raises(MinimumWorkersReached):
        engine.teardown("default")
    decision = replace(engine.last["default"], spawn=0, retire=1)
    engine._act(decision)
    assert (engine.events[-1].kind, engine.events[-1].detail) == (
        "MinimumWorkersReached",
        "profile default is at its minimum of 1",
    )
