"""Tests for scheduler.elasticity.scaling: the pure scaling rules (no clock, no I/O).

References the scaling rules descend from: a Celery elasticity provider (needs from the queue
length and idle workers, an egalitarian budget), a Kubernetes-like deployment (min/max,
one scaling event at a time, failed instances recovered), the HPA algorithm (ceil,
tolerance 0.1, scale-up window takes the MIN, scale-down window the MAX) and KEDA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from scheduler.elasticity.model import (
    Decision,
    NodeInfo,
    Observation,
    ProfileConfig,
    ProfileMemory,
    WorkerState,
    WorkerView,
)
from scheduler.elasticity.scaling import (
    allot,
    classify,
    decide,
    raw_workers,
    retire_order,
    slackers,
    stabilize,
)

S = WorkerState


# -- helpers ---------------------------------------------------------------------------
def cfg(name: str = "p", **kw: Any) -> ProfileConfig:
    """A profile config; unlike ELASTICITY_PROFILES (minimum 1), the minimum is 0 unless
    given."""
    return ProfileConfig(name=name, **{"min_workers": 0, **kw})


def pool(
    profile: str = "p",
    *,
    idle: int = 0,
    busy: int = 0,
    booting: int = 0,
    draining: int = 0,
    lost: int = 0,
    since: float = 0.0,
) -> tuple[WorkerView, ...]:
    views: list[WorkerView] = []
    for state, n in (
        (S.IDLE, idle),
        (S.BUSY, busy),
        (S.BOOTING, booting),
        (S.DRAINING, draining),
        (S.LOST, lost),
    ):
        views += [WorkerView(f"{profile}-{state}-{i}", profile, state, since) for i in range(n)]
    return tuple(views)


def obs(
    profile: str = "p",
    backlog: int = 0,
    workers: tuple[WorkerView, ...] = (),
    mean: float | None = None,
) -> Observation:
    return Observation(profile, backlog, workers=workers, mean_action_seconds=mean)


def decide_one(
    o: Observation,
    c: ProfileConfig,
    budget: int,
    now: float = 0.0,
    memory: ProfileMemory | None = None,
) -> Decision:
    (d,) = decide([o], {c.name: memory or ProfileMemory()}, {c.name: c}, budget, now)
    return d


# -- raw_workers -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("backlog", "mean", "config", "expected"),
    [
        pytest.param(0, None, cfg(min_workers=0), (0, 1.0), id="backlog0-min0"),
        pytest.param(0, None, cfg(min_workers=2), (2, 1.0), id="backlog0-is-min"),
        pytest.param(0, 5.0, cfg(min_workers=1), (1, 5.0), id="backlog0-learnt-mean"),
        pytest.param(1, None, cfg(), (1, 1.0), id="one-message-one-worker"),
        pytest.param(10, None, cfg(), (1, 1.0), id="exact-latency-one-worker"),
        pytest.param(11, None, cfg(), (2, 1.0), id="ceil-just-above"),
        pytest.param(30, None, cfg(max_workers=10), (3, 1.0), id="exact-multiple"),
        pytest.param(25, None, cfg(max_workers=10), (3, 1.0), id="ceil"),
        pytest.param(
            40, None, cfg(max_workers=10, concurrency=4), (1, 1.0), id="concurrency-divides"
        ),
        pytest.param(41, None, cfg(max_workers=10, concurrency=4), (2, 1.0), id="concurrency-ceil"),
        pytest.param(
            20, None, cfg(max_workers=10, target_latency=5.0), (4, 1.0), id="target-latency"
        ),
        pytest.param(
            10, None, cfg(max_workers=10, default_action_seconds=3.0), (3, 3.0), id="default-secs"
        ),
        pytest.param(
            10,
            2.0,
            cfg(max_workers=10, default_action_seconds=3.0),
            (2, 2.0),
            id="learnt-mean-overrides-default",
        ),
        pytest.param(200, None, cfg(max_workers=4), (4, 1.0), id="clamp-max"),
        pytest.param(1, None, cfg(min_workers=3, max_workers=4), (3, 1.0), id="clamp-min"),
        pytest.param(1, 0.01, cfg(), (1, 0.01), id="tiny-mean-still-one"),
    ],
)
def test_raw_workers(
    backlog: int, mean: float | None, config: ProfileConfig, expected: tuple[int, float]
) -> None:
    assert raw_workers(obs(backlog=backlog, mean=mean), config)[:2] == expected


@pytest.mark.parametrize(
    ("backlog", "config", "why"),
    [
        (0, cfg(min_workers=1), "the minimum is 1 (backlog 0 asks for 0)"),
        (15, cfg(min_workers=1, max_workers=4), "backlog 15 asks for 2"),
        (200, cfg(max_workers=4), "backlog 200 asks for 20, capped at the maximum 4"),
    ],
)
def test_the_reason_names_what_decided_the_count(
    backlog: int, config: ProfileConfig, why: str
) -> None:
    """Not "backlog asks for 1" when the backlog is empty: the minimum asked."""
    assert raw_workers(obs(backlog=backlog), config)[2] == why


def test_a_held_scale_down_names_its_window() -> None:
    config = cfg(min_workers=1, max_workers=4, scale_down_window=30.0)
    memory = ProfileMemory()
    stabilize(memory, 4, 4, config, now=0.0, why="backlog 40 asks for 4")
    _, reason = stabilize(memory, 1, 4, config, now=10.0, why="the minimum is 1")
    assert reason == (
        "the minimum is 1; the scale-down window holds 4: 4 asked for within the last 30 s"
    )


@pytest.mark.parametrize(
    ("backlog", "workers", "config", "reason"),
    [
        pytest.param(
            0, pool(idle=1), cfg(min_workers=1), "steady at 1: the minimum is 1", id="minimum"
        ),
        pytest.param(
            200, pool(busy=4), cfg(max_workers=4), "steady at 4: the maximum is 4", id="maximum"
        ),
        pytest.param(
            20,
            pool(idle=1, busy=1),
            cfg(max_workers=4),
            "steady at 2: the backlog asks for 2",
            id="backlog",
        ),
        pytest.param(
            105,
            pool(busy=10),
            cfg(max_workers=20),
            "steady at 10: the backlog asks for 11, within the tolerance (10%)",
            id="tolerance",
        ),
    ],
)
def test_a_pool_that_keeps_its_size_says_what_holds_it(
    backlog: int, workers: tuple[WorkerView, ...], config: ProfileConfig, reason: str
) -> None:
    """Not a bare "steady": the minimum, the maximum or the backlog — in words that stay
    the same while the backlog drains (so the command line folds those rounds)."""
    assert decide_one(obs(backlog=backlog, workers=workers), config, budget=20).reason == reason


# -- a paused dispatcher -----------------------------------------------------------------
def paused_obs(
    tasks: int, waiting: int, workers: tuple[WorkerView, ...], paused: bool = True
) -> Observation:
    return Observation("p", tasks + waiting, workers=workers, waiting=waiting, paused=paused)


@pytest.mark.parametrize(
    ("tasks", "waiting", "workers", "paused", "target", "spawn", "retire", "reason"),
    [
        pytest.param(
            0,
            200,
            pool(idle=1),
            True,
            1,
            0,
            0,
            "steady at 1: the dispatcher is paused; the minimum is 1",
            id="paused-waiting-do-not-grow-the-pool",
        ),
        pytest.param(
            0,
            200,
            pool(idle=1),
            False,
            4,
            3,
            0,
            "backlog 200 asks for 20, capped at the maximum 4",
            id="the-same-backlog-resumed-grows-it",
        ),
        pytest.param(
            0,
            200,
            pool(idle=4),
            True,
            1,
            0,
            3,
            "the dispatcher is paused, so 200 waiting event(s) are not counted; "
            "the minimum is 1 (backlog 0 asks for 0)",
            id="paused-an-idle-pool-shrinks-to-the-minimum",
        ),
        pytest.param(
            30,
            200,
            pool(idle=1),
            True,
            3,
            2,
            0,
            "the dispatcher is paused, so 200 waiting event(s) are not counted; "
            "backlog 30 asks for 3",
            id="paused-dispatched-tasks-still-count",
        ),
        pytest.param(
            1,
            200,
            pool(busy=1),
            True,
            1,
            0,
            0,
            "steady at 1: the dispatcher is paused; the backlog asks for 1",
            id="paused-busy-with-waiting-events-is-no-reason-to-grow",
        ),
        pytest.param(
            0,
            0,
            pool(idle=1),
            True,
            1,
            0,
            0,
            "steady at 1: the dispatcher is paused; the minimum is 1",
            id="paused-nothing-waiting",
        ),
    ],
)
def test_a_paused_dispatcher_s_waiting_events_do_not_grow_the_pool(
    tasks: int,
    waiting: int,
    workers: tuple[WorkerView, ...],
    paused: bool,
    target: int,
    spawn: int,
    retire: int,
    reason: str,
) -> None:
    """While the dispatcher is paused, the events waiting in the per-key queues cannot be
    dispatched: only the tasks dispatched before count, so the pool stays at (or goes
    back to) its minimum, saying why. No windows: the scaling rules' own answer."""
    config = cfg(min_workers=1, max_workers=4, scale_down_window=0.0)
    d = decide_one(paused_obs(tasks, waiting, workers, paused), config, budget=8)
    assert (d.target, d.spawn, d.retire, d.reason) == (target, spawn, retire, reason)
    assert d.backlog == tasks + waiting, "the decision shows the whole backlog"


def test_a_spawn_short_of_room_names_the_budget() -> None:
    a, b = cfg("a"), cfg("b")
    observations = [obs("a", 200, pool("a", busy=3)), obs("b", 200, pool("b"))]
    memories = {"a": ProfileMemory(), "b": ProfileMemory()}
    _, db = decide(observations, memories, {"a": a, "b": b}, 4, 0.0)
    assert db.reason.endswith("; the budget (ELASTICITY_BUDGET) has room for 1 of 2 more")


# -- stabilize -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("capacity", "raw", "expected"),
    [
        pytest.param(10, 10, 10, id="steady"),
        pytest.param(10, 9, 10, id="10pct-below-holds"),
        pytest.param(
            10,
            11,
            10,
            id="10pct-above-holds",
        ),
        pytest.param(
            20,
            22,
            20,
            id="10pct-above-holds-20",
        ),
        pytest.param(20, 21, 20, id="5pct-above-holds"),
        pytest.param(20, 18, 20, id="10pct-below-holds-20"),
        pytest.param(10, 12, 12, id="20pct-above-scales"),
        pytest.param(20, 23, 23, id="15pct-above-scales"),
        pytest.param(1, 2, 2, id="small-pool-scales-up"),
        pytest.param(0, 1, 1, id="from-zero"),
    ],
)
def test_stabilize_tolerance_band(capacity: int, raw: int, expected: int) -> None:
    # no windows: only the tolerance band is at work
    config = cfg(max_workers=100, scale_up_window=0.0, scale_down_window=0.0)
    stable, _ = stabilize(ProfileMemory(), raw, capacity, config, now=100.0)
    assert stable == expected


def test_stabilize_tolerance_does_not_apply_below_minimum() -> None:
    # 20 vs 19 is within 10 %, but a pool below its minimum always grows back
    config = cfg(min_workers=20, max_workers=100, scale_down_window=0.0)
    stable, _ = stabilize(ProfileMemory(), 20, 19, config, now=0.0)
    assert stable == 20


def run_stabilize(
    config: ProfileConfig, capacity: int, series: Sequence[tuple[float, int]]
) -> list[int]:
    memory = ProfileMemory()
    return [stabilize(memory, raw, capacity, config, now)[0] for now, raw in series]


@pytest.mark.parametrize(
    ("capacity", "series", "expected"),
    [
        pytest.param(
            1,
            [(0, 1), (10, 4), (20, 4), (30, 4)],
            [1, 1, 1, 4],
            id="spike-must-last-the-window",
        ),
        pytest.param(
            1,
            [(0, 1), (10, 4), (20, 1), (30, 4), (40, 4), (50, 4)],
            [1, 1, 1, 1, 1, 4],
            id="intermittent-spikes-do-not-scale",
        ),
        pytest.param(
            1,
            [(0, 1), (10, 3), (20, 4), (30, 4), (40, 4)],
            [1, 1, 1, 3, 4],
            id="takes-min-over-window",
        ),
    ],
)
def test_stabilize_scale_up_window_takes_min(
    capacity: int, series: list[tuple[float, int]], expected: list[int]
) -> None:
    config = cfg(max_workers=10, scale_up_window=20.0, scale_down_window=0.0)
    assert run_stabilize(config, capacity, series) == expected


def test_stabilize_zero_scale_up_window_scales_at_once() -> None:
    config = cfg(max_workers=10, scale_up_window=0.0, scale_down_window=30.0)
    assert run_stabilize(config, 1, [(0, 1), (10, 1), (20, 4)]) == [1, 1, 4]


@pytest.mark.parametrize(
    ("capacity", "series", "expected"),
    [
        pytest.param(
            4,
            [(0, 4), (10, 1), (20, 1), (30, 4), (40, 4)],
            [4, 4, 4, 4, 4],
            id="dip-shorter-than-window-holds",
        ),
        pytest.param(
            4,
            [(0, 4), (10, 1), (20, 1), (30, 1), (40, 1)],
            [4, 4, 4, 4, 1],
            id="sustained-drop-after-window",
        ),
        pytest.param(
            4,
            [(0, 4), (10, 3), (20, 1), (30, 1), (40, 1), (50, 1)],
            [4, 4, 4, 4, 3, 1],
            id="takes-max-over-window",
        ),
        pytest.param(
            4,
            [(0, 1)],
            [1],
            id="no-history-scales-down",
        ),
        pytest.param(
            4,
            [(0, 6), (10, 2), (20, 2), (30, 2)],
            [6, 4, 4, 4],
            id="higher-past-recommendation-never-scales-up-on-the-way-down",
        ),
    ],
)
def test_stabilize_scale_down_window_takes_max(
    capacity: int, series: list[tuple[float, int]], expected: list[int]
) -> None:
    config = cfg(max_workers=10, scale_up_window=0.0, scale_down_window=30.0)
    assert run_stabilize(config, capacity, series) == expected


@pytest.mark.parametrize(
    ("up", "down", "times", "now", "kept"),
    [
        pytest.param(0.0, 30.0, [0, 10, 20, 30], 40.0, [10, 20, 30, 40], id="down-longest"),
        pytest.param(60.0, 30.0, [0, 10, 20, 30], 70.0, [10, 20, 30, 70], id="up-longest"),
        pytest.param(0.0, 30.0, [0, 5], 100.0, [100], id="all-old-pruned"),
        pytest.param(0.0, 0.0, [0, 5], 5.0, [5, 5], id="zero-windows-keep-now"),
    ],
)
def test_stabilize_prunes_beyond_longest_window(
    up: float, down: float, times: list[float], now: float, kept: list[float]
) -> None:
    memory = ProfileMemory(recommendations=[(t, 2) for t in times])
    config = cfg(scale_up_window=up, scale_down_window=down)
    stabilize(memory, 2, 2, config, now)
    assert [t for t, _ in memory.recommendations] == kept


def test_stabilize_records_raw() -> None:
    memory = ProfileMemory()
    stabilize(memory, 3, 1, cfg(), 7.0)
    assert memory.recommendations == [(7.0, 3)]


# -- allot -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("demands", "minimums", "budget", "expected"),
    [
        pytest.param({"a": 4, "b": 4}, {"a": 0, "b": 0}, 4, {"a": 2, "b": 2}, id="even-split"),
        pytest.param({"a": 0, "b": 4}, {"a": 0, "b": 0}, 4, {"a": 0, "b": 4}, id="idle-lends"),
        pytest.param({"a": 1, "b": 4}, {"a": 0, "b": 0}, 4, {"a": 1, "b": 3}, id="lend-unused"),
        pytest.param({"a": 1, "b": 1}, {"a": 0, "b": 0}, 4, {"a": 1, "b": 1}, id="under-budget"),
        pytest.param({"a": 4, "b": 4}, {"a": 0, "b": 0}, 5, {"a": 3, "b": 2}, id="odd-budget"),
        pytest.param({"a": 4, "b": 4}, {"a": 0, "b": 0}, 0, {"a": 0, "b": 0}, id="zero-budget"),
        pytest.param(
            {"a": 1, "b": 4}, {"a": 1, "b": 1}, 3, {"a": 1, "b": 2}, id="minimums-then-rest"
        ),
        pytest.param(
            {"a": 2, "b": 4}, {"a": 2, "b": 0}, 3, {"a": 2, "b": 1}, id="minimum-honoured-first"
        ),
        pytest.param(
            {"a": 1, "b": 1}, {"a": 1, "b": 1}, 1, {"a": 1, "b": 1}, id="minimums-over-budget"
        ),
        pytest.param(
            {"a": 4, "b": 4, "c": 4},
            {"a": 0, "b": 0, "c": 0},
            4,
            {"a": 2, "b": 1, "c": 1},
            id="three-profiles",
        ),
        pytest.param(
            {"a": 4, "b": 4, "c": 4},
            {"a": 0, "b": 0, "c": 0},
            6,
            {"a": 2, "b": 2, "c": 2},
            id="three-even",
        ),
        pytest.param(
            {"a": 1, "b": 4, "c": 4},
            {"a": 0, "b": 0, "c": 0},
            6,
            {"a": 1, "b": 3, "c": 2},
            id="three-one-small",
        ),
        pytest.param(
            {"a": 0, "b": 0, "c": 4},
            {"a": 0, "b": 0, "c": 0},
            4,
            {"a": 0, "b": 0, "c": 4},
            id="three-two-idle",
        ),
        pytest.param(
            {"a": 4, "b": 4},
            {"a": 2, "b": 0},
            4,
            {"a": 2, "b": 2},
            id="unequal-minimums-max-min-fair",
        ),
        pytest.param(
            {"b": 4, "a": 4},
            {"b": 0, "a": 3},
            4,
            {"b": 1, "a": 3},
            id="unequal-minimums-order-b-first",
        ),
    ],
)
def test_allot(
    demands: dict[str, int], minimums: dict[str, int], budget: int, expected: dict[str, int]
) -> None:
    shares = allot(demands, minimums, budget)
    assert shares == expected


@pytest.mark.parametrize(
    ("demands", "minimums", "budget"),
    [
        pytest.param({"a": 4, "b": 4}, {"a": 0, "b": 0}, 4, id="two"),
        pytest.param({"a": 3, "b": 1, "c": 5}, {"a": 1, "b": 0, "c": 0}, 7, id="three"),
        pytest.param({"a": 2, "b": 2}, {"a": 1, "b": 1}, 10, id="surplus"),
    ],
)
def test_allot_invariants(demands: dict[str, int], minimums: dict[str, int], budget: int) -> None:
    shares = allot(demands, minimums, budget)
    assert sum(shares.values()) == min(budget, sum(demands.values()))
    for p in demands:
        assert min(minimums[p], demands[p]) <= shares[p] <= demands[p]


# -- decide ----------------------------------------------------------------------------
def test_decide_burst_spawns_all_at_once() -> None:
    """min 1 max 4, backlog 200 at 1 s, 10 s target, one idle worker: 3 more at once."""
    c = cfg(min_workers=1, max_workers=4)
    d = decide_one(obs(backlog=200, workers=pool(idle=1)), c, budget=4)
    assert (d.raw, d.stabilized, d.allotted, d.target) == (4, 4, 4, 4)
    assert (d.capacity, d.spawn, d.retire, d.blocked_by) == (1, 3, 0, None)
    assert d.action_seconds == 1.0


@pytest.mark.parametrize(
    ("workers", "capacity"),
    [
        pytest.param(pool(idle=1, booting=3), 4, id="1-idle-3-booting"),
        pytest.param(pool(booting=4), 4, id="4-booting"),
        pytest.param(pool(busy=2, booting=1), 3, id="2-busy-1-booting"),
    ],
)
def test_decide_booting_counts_as_capacity(workers: tuple[WorkerView, ...], capacity: int) -> None:
    c = cfg(min_workers=1, max_workers=4)
    d = decide_one(obs(backlog=200, workers=workers), c, budget=4)
    assert d.capacity == capacity
    assert (d.spawn, d.retire) == (0, 0)
    assert d.blocked_by == "ScalingInProgress"


def test_decide_draining_blocks_further_scaling() -> None:
    c = cfg(min_workers=0, max_workers=4, scale_down_window=0.0)
    d = decide_one(obs(backlog=0, workers=pool(idle=2, draining=1)), c, budget=4)
    assert (d.spawn, d.retire, d.blocked_by) == (0, 0, "ScalingInProgress")


@pytest.mark.parametrize(
    ("minimum", "workers", "backlog", "spawn"),
    [
        pytest.param(2, pool(booting=1), 0, 1, id="booting-below-min"),
        pytest.param(3, pool(idle=1, booting=1), 0, 1, id="idle-booting-below-min"),
        pytest.param(2, pool(booting=1, lost=1), 0, 1, id="lost-replaced-while-booting"),
        pytest.param(2, pool(draining=1), 0, 2, id="draining-below-min"),
        pytest.param(1, pool(lost=1), 0, 1, id="lost-replaced"),
        pytest.param(2, pool(booting=1), 200, 3, id="below-min-with-backlog"),
    ],
)
def test_decide_recovery_below_minimum_never_waits(
    minimum: int, workers: tuple[WorkerView, ...], backlog: int, spawn: int
) -> None:
    c = cfg(min_workers=minimum, max_workers=4)
    d = decide_one(obs(backlog=backlog, workers=workers), c, budget=8)
    assert d.spawn == spawn
    assert d.blocked_by is None


@pytest.mark.parametrize(
    ("busy", "idle", "minimum", "retire", "blocked"),
    [
        pytest.param(2, 2, 1, 2, None, id="2busy-2idle-target1"),
        pytest.param(3, 1, 1, 1, None, id="3busy-1idle"),
        pytest.param(0, 4, 1, 3, None, id="all-idle-to-min"),
        pytest.param(0, 4, 0, 4, None, id="all-idle-to-zero"),
        pytest.param(4, 0, 1, 0, "NoIdleWorkersError", id="all-busy"),
        pytest.param(1, 0, 0, 0, "NoIdleWorkersError", id="one-busy-to-zero"),
    ],
)
def test_decide_scale_down_retires_only_idle(
    busy: int, idle: int, minimum: int, retire: int, blocked: str | None
) -> None:
    # the utilisation band would hold these pools (busy ones present): switched off here
    # to test that whatever shrinks, only idle workers are retired
    c = cfg(min_workers=minimum, max_workers=4, scale_down_window=0.0, scale_down_utilisation=1.0)
    d = decide_one(obs(backlog=0, workers=pool(busy=busy, idle=idle)), c, budget=4)
    assert d.target == minimum
    assert d.retire == retire
    assert d.retire <= idle
    assert d.spawn == 0
    assert d.blocked_by == blocked


def test_decide_insufficient_resources_draining_occupies_budget() -> None:
    a, b = cfg("a"), cfg("b")
    observations = [
        obs("a", 0, pool("a", draining=2)),
        obs("b", 200, pool("b", busy=2)),
    ]
    memories = {"a": ProfileMemory(), "b": ProfileMemory()}
    da, db = decide(observations, memories, {"a": a, "b": b}, 4, 0.0)
    assert da.blocked_by == "ScalingInProgress"
    assert (db.allotted, db.target, db.spawn) == (4, 4, 0)
    assert db.blocked_by == "InsufficientResources"


def test_decide_insufficient_resources_partial_room() -> None:
    """a grew to 3 while b was idle; b now wants its share of 2 but only 1 slot is free."""
    a, b = cfg("a"), cfg("b")
    observations = [
        obs("a", 200, pool("a", busy=3)),
        obs("b", 200, pool("b")),
    ]
    memories = {"a": ProfileMemory(), "b": ProfileMemory()}
    da, db = decide(observations, memories, {"a": a, "b": b}, 4, 0.0)
    assert (da.allotted, da.target, da.retire, da.blocked_by) == (2, 2, 0, "NoIdleWorkersError")
    assert (db.allotted, db.target, db.spawn, db.blocked_by) == (2, 2, 1, "InsufficientResources")


def test_decide_lost_workers_do_not_occupy_budget() -> None:
    c = cfg(min_workers=0, max_workers=4)
    d = decide_one(obs(backlog=200, workers=pool(lost=4)), c, budget=4)
    assert (d.capacity, d.spawn, d.blocked_by) == (0, 4, None)


def test_decide_spawn_never_exceeds_free_budget_across_profiles() -> None:
    configs = {p: cfg(p) for p in ("a", "b", "c")}
    observations = [obs(p, 200) for p in configs]
    decisions = decide(observations, {p: ProfileMemory() for p in configs}, configs, 5, 0.0)
    assert sum(d.spawn for d in decisions) == 5
    assert sorted(d.spawn for d in decisions) == [1, 2, 2]


# -- decide over successive evaluations -----------------------------------------------
class World:
    """Workers per profile, advanced as if the engine acted on each decision."""

    def __init__(self, configs: Mapping[str, ProfileConfig], budget: int) -> None:
        self.configs = configs
        self.budget = budget
        self.memories = {p: ProfileMemory() for p in configs}
        self.workers: dict[str, list[WorkerView]] = {p: [] for p in configs}
        self.serial = 0

    def add(self, profile: str, state: WorkerState, now: float) -> None:
        self.serial += 1
        self.workers[profile].append(WorkerView(f"w{self.serial}", profile, state, now))

    def decide(self, backlogs: Mapping[str, int], now: float) -> dict[str, Decision]:
        observations = [obs(p, backlogs[p], tuple(self.workers[p])) for p in self.configs]
        decisions = decide(observations, self.memories, self.configs, self.budget, now)
        for d in decisions:
            for _ in range(d.spawn):
                self.add(d.profile, S.BOOTING, now)
            doomed = {w.name for w in retire_order(self.workers[d.profile])[: d.retire]}
            self.workers[d.profile] = [
                WorkerView(w.name, w.profile, S.DRAINING, now) if w.name in doomed else w
                for w in self.workers[d.profile]
            ]
        occupied = sum(w.state is not S.LOST for views in self.workers.values() for w in views)
        assert occupied <= self.budget
        return {d.profile: d for d in decisions}

    def settle(self, backlogs: Mapping[str, int], now: float) -> None:
        """Booting workers register; drained ones exit; each is busy iff backlog."""
        for p, views in self.workers.items():
            state = S.BUSY if backlogs[p] else S.IDLE
            self.workers[p] = [
                WorkerView(w.name, p, state, now if w.state != state else w.since)
                for w in views
                if w.state is not S.DRAINING
            ]

    def count(self, profile: str) -> int:
        return len(self.workers[profile])


def test_decide_two_profiles_share_then_lend() -> None:
    configs = {p: cfg(p, max_workers=4, scale_down_window=30.0) for p in ("a", "b")}
    world = World(configs, budget=4)
    both = {"a": 200, "b": 200}
    only_b = {"a": 0, "b": 200}

    d = world.decide(both, 0.0)
    assert (d["a"].allotted, d["b"].allotted) == (2, 2)
    assert (d["a"].spawn, d["b"].spawn) == (2, 2)
    world.settle(both, 5.0)

    d = world.decide(both, 10.0)
    assert (d["a"].spawn, d["b"].spawn, d["a"].retire, d["b"].retire) == (0, 0, 0, 0)
    assert (d["a"].blocked_by, d["b"].blocked_by) == (None, None)

    # a runs dry: its share is held for the scale-down window, b stays at 2
    for now in (20.0, 30.0, 40.0):
        world.settle(only_b, now - 5)
        d = world.decide(only_b, now)
        assert (d["a"].stabilized, d["a"].retire, d["b"].allotted, d["b"].spawn) == (2, 0, 2, 0)

    # window over: a retires its idle workers, b's share grows but the budget is occupied
    d = world.decide(only_b, 50.0)
    assert (d["a"].target, d["a"].retire) == (0, 2)
    assert (d["b"].allotted, d["b"].spawn, d["b"].blocked_by) == (4, 0, "InsufficientResources")

    # a's workers are still draining: they occupy the budget
    d = world.decide(only_b, 60.0)
    assert d["a"].blocked_by == "ScalingInProgress"
    assert (d["b"].spawn, d["b"].blocked_by) == (0, "InsufficientResources")

    world.settle(only_b, 65.0)  # drained workers exit
    d = world.decide(only_b, 70.0)
    assert (d["b"].spawn, d["b"].blocked_by) == (2, None)
    world.settle(only_b, 75.0)
    d = world.decide(only_b, 80.0)
    assert (world.count("a"), world.count("b")) == (0, 4)
    assert (d["b"].spawn, d["b"].retire, d["b"].blocked_by) == (0, 0, None)

    # a comes back: the shares return to 2/2 as b's workers go idle one by one
    d = world.decide(both, 90.0)
    assert (d["a"].allotted, d["b"].allotted) == (2, 2)
    assert (d["a"].spawn, d["a"].blocked_by) == (0, "InsufficientResources")
    assert (d["b"].retire, d["b"].blocked_by) == (0, "NoIdleWorkersError")


@pytest.mark.parametrize(
    "backlogs",
    [
        pytest.param([100, 90, 85, 100, 98, 83, 100, 82, 99, 100], id="10-with-9s"),
        pytest.param([100] * 10, id="flat"),
        pytest.param(
            [100, 110, 105, 100, 91, 110, 100, 101, 95, 110],
            id="10-with-11s",
        ),
    ],
)
def test_decide_steady_load_inside_tolerance_does_not_flap(backlogs: list[int]) -> None:
    """Capacity 10; raw wobbles within 10 % of it: 10 decisions, no change."""
    c = cfg(max_workers=20, scale_down_window=0.0)
    memory = ProfileMemory()
    workers = pool(busy=7, idle=3)
    for i, backlog in enumerate(backlogs):
        d = decide_one(obs(backlog=backlog, workers=workers), c, 20, now=10.0 * i, memory=memory)
        assert 9 <= d.raw <= 11
        assert (d.spawn, d.retire, d.blocked_by) == (0, 0, None), d


def test_decide_steady_load_inside_tolerance_with_windows_does_not_flap() -> None:
    c = cfg(max_workers=40)  # default windows: up 0, down 30
    memory = ProfileMemory()
    workers = pool(busy=20)
    for i, backlog in enumerate([200, 190, 210, 181, 200, 205, 185, 200, 195, 210]):
        d = decide_one(obs(backlog=backlog, workers=workers), c, 40, now=5.0 * i, memory=memory)
        assert 19 <= d.raw <= 21
        assert (d.spawn, d.retire) == (0, 0), d


def test_decide_scale_down_only_after_window() -> None:
    c = cfg(min_workers=1, max_workers=4, scale_down_window=30.0)
    memory = ProfileMemory()
    workers = pool(idle=4)
    d = decide_one(obs(backlog=200, workers=workers), c, 4, now=0.0, memory=memory)
    assert (d.spawn, d.retire) == (0, 0)
    for now in (5.0, 10.0, 20.0, 30.0):
        d = decide_one(obs(backlog=0, workers=workers), c, 4, now=now, memory=memory)
        assert (d.stabilized, d.retire) == (4, 0), now
    d = decide_one(obs(backlog=0, workers=workers), c, 4, now=35.0, memory=memory)
    assert (d.stabilized, d.target, d.retire) == (1, 1, 3)


def test_decide_records_one_recommendation_per_profile() -> None:
    configs = {p: cfg(p) for p in ("a", "b")}
    memories = {p: ProfileMemory() for p in configs}
    decide([obs("a", 20), obs("b", 0)], memories, configs, 4, 3.0)
    assert memories["a"].recommendations == [(3.0, 2)]
    assert memories["b"].recommendations == [(3.0, 0)]


# -- slackers / retire_order -----------------------------------------------------------
def view(name: str, state: WorkerState, since: float) -> WorkerView:
    return WorkerView(name, "p", state, since)


@pytest.mark.parametrize(
    ("workers", "now", "threshold", "expected"),
    [
        pytest.param([view("a", S.BOOTING, 0)], 61, 60, ["a"], id="old-booting"),
        pytest.param([view("a", S.BOOTING, 0)], 60, 60, [], id="exactly-threshold"),
        pytest.param([view("a", S.BOOTING, 30)], 61, 60, [], id="young-booting"),
        pytest.param(
            [view(s, S(s), 0) for s in ("idle", "busy", "draining", "lost")],
            1000,
            60,
            [],
            id="other-states-never",
        ),
        pytest.param(
            [view("a", S.BOOTING, 0), view("b", S.IDLE, 0), view("c", S.BOOTING, 50)],
            100,
            60,
            ["a"],
            id="mixed",
        ),
    ],
)
def test_slackers(
    workers: list[WorkerView], now: float, threshold: float, expected: list[str]
) -> None:
    assert [w.name for w in slackers(workers, now, threshold)] == expected


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        pytest.param(
            [view("a", S.IDLE, 30), view("b", S.IDLE, 10), view("c", S.IDLE, 20)],
            ["b", "c", "a"],
            id="longest-idle-first",
        ),
        pytest.param(
            [
                view("busy", S.BUSY, 0),
                view("boot", S.BOOTING, 0),
                view("drain", S.DRAINING, 0),
                view("lost", S.LOST, 0),
                view("idle", S.IDLE, 5),
            ],
            ["idle"],
            id="idle-only",
        ),
        pytest.param([view("x", S.BUSY, 0)], [], id="none-idle"),
        pytest.param([], [], id="empty"),
    ],
)
def test_retire_order(workers: list[WorkerView], expected: list[str]) -> None:
    assert [w.name for w in retire_order(workers)] == expected


# -- classify --------------------------------------------------------------------------
def node(
    last_seen: float = 100.0,
    active: int = 0,
    idle_since: float = 50.0,
    offline: bool = False,
) -> NodeInfo:
    return NodeInfo(
        first_seen=10.0, last_seen=last_seen, active=active, idle_since=idle_since, offline=offline
    )


@pytest.mark.parametrize(
    ("nodes", "draining", "exited", "expected"),
    [
        pytest.param({}, {}, set(), (S.BOOTING, 5.0), id="never-seen-booting-since-spawn"),
        pytest.param({"w": node()}, {}, set(), (S.IDLE, 50.0), id="idle-since-idle_since"),
        pytest.param({"w": node(active=2)}, {}, set(), (S.BUSY, 100.0), id="busy"),
        pytest.param({"w": node(offline=True)}, {}, set(), (S.LOST, 100.0), id="offline-lost"),
        pytest.param({"w": node(last_seen=80.0)}, {}, set(), (S.LOST, 80.0), id="stale-lost"),
        pytest.param({"w": node(last_seen=90.0)}, {}, set(), (S.IDLE, 50.0), id="at-timeout-ok"),
        pytest.param(
            {"w": node(last_seen=80.0, active=1)}, {}, set(), (S.LOST, 80.0), id="stale-busy-lost"
        ),
        pytest.param({"w": node()}, {}, {"w"}, (S.LOST, 100.0), id="exited-lost"),
        pytest.param({}, {}, {"w"}, (S.LOST, 100.0), id="exited-before-seen-lost"),
        pytest.param({"w": node()}, {"w": 70.0}, set(), (S.DRAINING, 70.0), id="draining"),
        pytest.param(
            {"w": node(active=1)}, {"w": 70.0}, set(), (S.DRAINING, 70.0), id="draining-busy"
        ),
        pytest.param(
            {"w": node(offline=True)}, {"w": 70.0}, {"w"}, (S.DRAINING, 70.0), id="draining-wins"
        ),
        pytest.param({}, {"w": 70.0}, set(), (S.DRAINING, 70.0), id="draining-unseen"),
    ],
)
def test_classify(
    nodes: dict[str, NodeInfo],
    draining: dict[str, float],
    exited: set[str],
    expected: tuple[WorkerState, float],
) -> None:
    (v,) = classify("p", {"w": 5.0}, nodes, draining, exited, now=100.0, heartbeat_timeout=10.0)
    assert (v.name, v.profile) == ("w", "p")
    assert (v.state, v.since) == expected


def test_classify_only_spawned_workers() -> None:
    nodes = {"w1": node(), "stranger": node(active=1)}
    views = classify("p", {"w1": 1.0, "w2": 2.0}, nodes, {}, set(), 100.0, 10.0)
    assert [(v.name, v.state) for v in views] == [("w1", S.IDLE), ("w2", S.BOOTING)]


# -- the utilisation band (the Kubernetes-like deployment's 0.8 / 0.2) -------------------


@pytest.mark.parametrize(
    ("busy", "idle", "backlog", "spawn", "retire"),
    [
        pytest.param(4, 1, 6, 1, 0, id="80pct-busy-with-work-waiting-grows-by-one"),
        pytest.param(4, 1, 4, 0, 0, id="80pct-busy-nothing-waiting-holds"),
        pytest.param(3, 2, 6, 0, 0, id="60pct-busy-holds"),
        pytest.param(1, 3, 0, 0, 0, id="25pct-busy-does-not-shrink"),
        pytest.param(1, 4, 0, 0, 4, id="20pct-busy-shrinks-idle-only"),
        pytest.param(0, 4, 0, 0, 3, id="idle-pool-shrinks-to-min"),
    ],
)
def test_utilisation_band(busy: int, idle: int, backlog: int, spawn: int, retire: int) -> None:
    # a long target latency: the backlog alone would never ask for more than the minimum
    c = cfg(min_workers=1, max_workers=8, target_latency=1000.0, scale_down_window=0.0)
    d = decide_one(obs(backlog=backlog, workers=pool(busy=busy, idle=idle)), c, budget=8)
    assert (d.spawn, d.retire) == (spawn, retire), d.reason
