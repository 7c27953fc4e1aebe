"""Tests for scheduler.elasticity.tracker.WorkerTracker fed with Celery event dicts.

No broker: ``on_event(event, now)`` is called directly with an explicit clock; the Celery
app is only used by ``run()``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from scheduler.elasticity.model import NodeInfo
from scheduler.elasticity.tracker import WorkerTracker

NODE = "elastic.default.1a2b3c4d@host"
OTHER = "elastic.default.5e6f7a8b@host"
GPU = "elastic.gpu.99999999@host"

Event = tuple[float, dict[str, Any]]


def ev(kind: str, host: str = NODE, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "hostname": host, **fields}


def online(host: str = NODE) -> dict[str, Any]:
    return ev("worker-online", host)


def hb(active: int | None, host: str = NODE) -> dict[str, Any]:
    return ev("worker-heartbeat", host, active=active)


def started(uuid: str, host: str = NODE) -> dict[str, Any]:
    return ev("task-started", host, uuid=uuid)


def succeeded(uuid: str, runtime: Any = 1.0, host: str = NODE) -> dict[str, Any]:
    return ev("task-succeeded", host, uuid=uuid, runtime=runtime)


def tracker(events: Sequence[Event] = (), alpha: float = 0.2) -> WorkerTracker:
    t = WorkerTracker(app=None, ewma_alpha=alpha)  # type: ignore[arg-type]
    for now, event in events:
        t.on_event(event, now)
    return t


def info(
    active: int = 0,
    idle_since: float = 0.0,
    last_seen: float = 0.0,
    first_seen: float = 0.0,
    offline: bool = False,
) -> NodeInfo:
    return NodeInfo(
        first_seen=first_seen,
        last_seen=last_seen,
        active=active,
        idle_since=idle_since,
        offline=offline,
    )


# -- node states -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param([(0, online())], info(), id="online"),
        pytest.param([(5, hb(0))], info(0, 5, 5, 5), id="first-event-heartbeat"),
        pytest.param([(0, online()), (2, hb(1))], info(1, 0, 2), id="heartbeat-busy"),
        pytest.param(
            [(0, online()), (2, hb(1)), (4, hb(0))], info(0, 4, 4), id="heartbeat-idle-again"
        ),
        pytest.param([(0, online()), (2, hb(0)), (4, hb(0))], info(0, 0, 4), id="idle-since-kept"),
        pytest.param([(0, online()), (2, hb(None))], info(0, 0, 2), id="heartbeat-no-active"),
        pytest.param(
            [(0, online()), (2, hb(0)), (3, started("u1"))],
            info(1, 0, 3),
            id="task-started-busy-at-once",
        ),
        pytest.param(
            [(0, online()), (3, started("u1")), (4, hb(0))],
            info(1, 0, 4),
            id="late-heartbeat-does-not-hide-started-task",
        ),
        pytest.param(
            [(0, online()), (3, started("u1")), (4, hb(1)), (5, succeeded("u1"))],
            info(0, 5, 5),
            id="finish-after-heartbeat-idle",
        ),
        pytest.param(
            [(0, online()), (3, started("u1")), (5, succeeded("u1"))],
            info(0, 5, 5),
            id="finish-between-heartbeats-idle",
        ),
        pytest.param(
            [(0, online()), (3, started("u1")), (4, started("u2")), (5, succeeded("u1"))],
            info(1, 0, 5),
            id="two-running-one-finishes",
        ),
        pytest.param(
            [
                (0, online()),
                (3, started("u1")),
                (4, started("u2")),
                (4.5, hb(2)),
                (5, succeeded("u1")),
                (5.5, hb(1)),
                (6, succeeded("u2")),
            ],
            info(0, 6, 6),
            id="two-running-both-finish",
        ),
        pytest.param(
            [(0, online()), (3, started("u1")), (4, hb(1)), (5, ev("task-failed", uuid="u1"))],
            info(0, 5, 5),
            id="task-failed-finishes",
        ),
        pytest.param(
            [(0, online()), (3, started("u1")), (4, hb(1)), (5, ev("task-retried", uuid="u1"))],
            info(0, 5, 5),
            id="task-retried-finishes",
        ),
        pytest.param(
            [(0, online()), (3, started("u1")), (4, hb(1)), (5, ev("task-revoked", uuid="u1"))],
            info(0, 5, 5),
            id="task-revoked-finishes",
        ),
        pytest.param(
            [(0, online()), (3, started("u1")), (4, hb(1)), (5, ev("task-rejected", uuid="u1"))],
            info(0, 5, 5),
            id="task-rejected-finishes",
        ),
        pytest.param(
            [(0, online()), (2, hb(1)), (3, ev("task-received", uuid="u9"))],
            info(1, 0, 3),
            id="unknown-event-only-touches-last-seen",
        ),
        pytest.param(
            [(0, online()), (2, hb(2)), (3, succeeded("u1"))],
            info(1, 0, 3),
            id="missed-start-one-of-two-finishes-still-busy",
        ),
        pytest.param(
            [(0, online()), (9, ev("worker-offline"))], info(0, 0, 9, offline=True), id="offline"
        ),
        pytest.param(
            [(0, online()), (9, ev("worker-offline")), (12, online())],
            info(0, 0, 12),
            id="online-again",
        ),
        pytest.param(
            [(0, online()), (9, ev("worker-offline")), (12, hb(0))],
            info(0, 0, 12),
            id="heartbeat-clears-offline",
        ),
    ],
)
def test_node_state(events: list[Event], expected: NodeInfo) -> None:
    assert tracker(events).nodes() == {NODE: expected}


def test_task_started_between_heartbeats_is_busy_then_idle_on_finish() -> None:
    t = tracker([(0, online()), (2, hb(0))])
    assert t.nodes()[NODE].active == 0
    t.on_event(started("u1"), 3)
    assert t.nodes()[NODE].active == 1
    t.on_event(hb(1), 4)
    t.on_event(succeeded("u1"), 5)
    node = t.nodes()[NODE]
    assert (node.active, node.idle_since) == (0, 5)


def test_lost_finish_event_does_not_pin_worker_busy_forever() -> None:
    t = tracker([(0, online()), (3, started("u1"))])
    for now in range(10, 62, 2):  # the finish event fell in a reconnect gap
        t.on_event(hb(0), float(now))
    assert t.nodes()[NODE].active == 0


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"type": "worker-online"}, id="no-hostname"),
        pytest.param({"type": "worker-online", "hostname": ""}, id="empty-hostname"),
        pytest.param({"type": "task-succeeded", "runtime": 5.0}, id="task-without-host"),
    ],
)
def test_events_without_hostname_are_ignored(event: dict[str, Any]) -> None:
    t = tracker([(0, event)])
    assert t.nodes() == {}
    assert t.mean_action_seconds("default") is None


def test_nodes_are_tracked_separately() -> None:
    t = tracker(
        [
            (0, online(NODE)),
            (1, online("celery@host")),
            (2, started("u1", NODE)),
            (3, hb(1, "celery@host")),
        ]
    )
    assert t.nodes() == {NODE: info(1, 0, 2), "celery@host": info(1, 1, 3, first_seen=1)}


def test_nodes_is_a_snapshot() -> None:
    t = tracker([(0, online())])
    before = t.nodes()
    t.on_event(started("u1"), 1)
    assert before[NODE].active == 0
    assert t.nodes()[NODE].active == 1


# -- mean action time (EWMA per profile) ---------------------------------------------------
@pytest.mark.parametrize(
    ("events", "alpha", "expected"),
    [
        pytest.param([], 0.2, {"default": None}, id="none-learnt"),
        pytest.param([succeeded("a", 2.0)], 0.2, {"default": 2.0}, id="first-sample"),
        pytest.param(
            [succeeded("a", 2.0), succeeded("b", 4.0)], 0.2, {"default": 2.4}, id="ewma-0.2"
        ),
        pytest.param(
            [succeeded("a", 2.0), succeeded("b", 4.0), succeeded("c", 4.0)],
            0.2,
            {"default": 2.72},
            id="ewma-three",
        ),
        pytest.param(
            [succeeded("a", 10.0), succeeded("b", 0.0)], 0.2, {"default": 8.0}, id="ewma-down"
        ),
        pytest.param(
            [succeeded("a", 2.0), succeeded("b", 4.0)], 0.5, {"default": 3.0}, id="custom-alpha"
        ),
        pytest.param([succeeded("a", 3)], 0.2, {"default": 3.0}, id="int-runtime"),
        pytest.param(
            [succeeded("a", 2.0, NODE), succeeded("b", 4.0, OTHER)],
            0.2,
            {"default": 2.4},
            id="nodes-of-a-profile-share-the-mean",
        ),
        pytest.param(
            [succeeded("a", 2.0, NODE), succeeded("b", 8.0, GPU), succeeded("c", 4.0, NODE)],
            0.2,
            {"default": 2.4, "gpu": 8.0},
            id="profiles-separate",
        ),
        pytest.param(
            [succeeded("a", 2.0, "celery@host")],
            0.2,
            {"default": None, "celery": None},
            id="non-elastic-node-ignored",
        ),
        pytest.param(
            [succeeded("a", 2.0, "elastic-default-1a2b3c4d@host")],
            0.2,
            {"default": None},
            id="dashed-name-not-elastic",
        ),
        pytest.param(
            [succeeded("a", 2.0, "elastic.default@host")],
            0.2,
            {"default": None},
            id="name-without-id-not-elastic",
        ),
        pytest.param(
            [ev("task-failed", uuid="a", runtime=9.0)],
            0.2,
            {"default": None},
            id="failed-not-learnt",
        ),
        pytest.param(
            [ev("task-started", uuid="a", runtime=9.0)],
            0.2,
            {"default": None},
            id="started-not-learnt",
        ),
        pytest.param([succeeded("a", None)], 0.2, {"default": None}, id="no-runtime"),
        pytest.param([succeeded("a", "2.0")], 0.2, {"default": None}, id="string-runtime"),
        pytest.param(
            [succeeded("a", 2.0), succeeded("b", None)],
            0.2,
            {"default": 2.0},
            id="missing-runtime-keeps-mean",
        ),
    ],
)
def test_mean_action_seconds(
    events: list[dict[str, Any]], alpha: float, expected: dict[str, float | None]
) -> None:
    t = tracker([(float(i), e) for i, e in enumerate(events)], alpha=alpha)
    for profile, mean in expected.items():
        got = t.mean_action_seconds(profile)
        if mean is None:
            assert got is None, profile
        else:
            assert got == pytest.approx(mean), profile


# -- forget ------------------------------------------------------------------------------
def test_forget_drops_node_and_its_running_tasks_but_not_the_mean() -> None:
    t = tracker(
        [
            (0, online(NODE)),
            (0, online(OTHER)),
            (1, succeeded("a", 2.0, NODE)),
            (2, started("u1", NODE)),
        ]
    )
    t.forget(NODE)
    assert set(t.nodes()) == {OTHER}
    assert t.mean_action_seconds("default") == 2.0
    # the same name again starts afresh: no stale running task
    t.on_event(hb(0), 10)
    assert t.nodes()[NODE] == info(0, 10, 10, first_seen=10)


def test_forget_unknown_node_is_harmless() -> None:
    t = tracker([(0, online())])
    t.forget("nobody@host")
    assert set(t.nodes()) == {NODE}


# -- run: following the event stream, reconnecting with backoff ---------------------------
class Stop:
    """A stop event that sets itself after ``rounds`` reconnect waits, recording them."""

    def __init__(self, rounds: int) -> None:
        self.delays: list[float] = []
        self.rounds = rounds
        self._done = threading.Event()

    def is_set(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None:  # the thread that halts the receiver
            return self._done.wait()
        self.delays.append(timeout)
        if len(self.delays) >= self.rounds:
            self._done.set()
        return self._done.is_set()


class StreamApp:
    """A Celery app whose broker connections fail or succeed as scripted; a successful
    one delivers no event and ends at once."""

    def __init__(self, outcomes: Sequence[bool]) -> None:
        self.outcomes = list(outcomes)
        self.events = SimpleNamespace(
            Receiver=lambda conn, handlers: SimpleNamespace(
                capture=lambda **kw: None, should_stop=False
            )
        )

    def connection_for_read(self) -> contextlib.nullcontext[None]:
        if not self.outcomes.pop(0):
            raise ConnectionError("broker away")
        return contextlib.nullcontext()


def test_run_reconnects_with_doubling_delays_reset_by_a_connect() -> None:
    outcomes = [False] * 7 + [True, False, False]
    stop = Stop(rounds=len(outcomes))
    WorkerTracker(app=StreamApp(outcomes)).run(stop)  # type: ignore[arg-type]
    assert stop.delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 0.5, 1.0, 2.0]
