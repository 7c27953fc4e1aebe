"""Tests for scheduler.elasticity.history: each pool against its backlog over the last
window, thinned to one sample per step (pure: the time is an argument)."""

from __future__ import annotations

import bisect
import math

import pytest

from scheduler.elasticity.history import PoolHistory, Sample
from scheduler.elasticity.model import WorkerState

BUSY = {WorkerState.BUSY: 1}


def ats(samples: list[Sample]) -> list[float]:
    return [s.at for s in samples]


def test_a_sample_keeps_every_state_the_decision_saw_zeros_too() -> None:
    history = PoolHistory()
    history.record("default", 1000.0, {WorkerState.IDLE: 2, WorkerState.BOOTING: 1}, 40, 4)
    [sample] = history.samples("default", since=0)
    assert sample == Sample(
        1000.0,
        {
            WorkerState.BOOTING: 1,
            WorkerState.IDLE: 2,
            WorkerState.BUSY: 0,
            WorkerState.DRAINING: 0,
            WorkerState.LOST: 0,
        },
        40,
        4,
    )


def test_within_a_step_the_latest_sample_replaces_the_earlier_whole() -> None:
    """One instant per sample: the step's last decision, its backlog with its counts,
    not the step's peak backlog beside other counts."""
    history = PoolHistory(window=60, step=10)
    history.record("default", 100.0, {WorkerState.BUSY: 3}, 90, 3)
    history.record("default", 104.0, {WorkerState.IDLE: 1}, 5, 1)
    history.record("default", 109.9, {WorkerState.IDLE: 2}, 0, 2)
    history.record("default", 110.0, {WorkerState.IDLE: 2}, 7, 2)
    first, second = history.samples("default", since=0)
    assert (first.at, first.backlog, first.desired, first.workers[WorkerState.IDLE]) == (
        109.9,
        0,
        2,
        2,
    )
    assert first.workers[WorkerState.BUSY] == 0
    assert (second.at, second.backlog) == (110.0, 7)


def reference(recorded: list[float], now: float, window: int, step: int) -> list[float]:
    """By brute force: the latest time of each step among those within the window."""
    latest: dict[int, float] = {}
    for at in recorded[bisect.bisect_left(recorded, now - window) :]:
        latest[math.floor(at / step)] = at
    return sorted(latest.values())


@pytest.mark.parametrize(
    ("window", "step", "interval"),
    [(3600, 10, 5.0), (600, 10, 0.25), (60, 10, 1.0), (10, 3, 0.1), (10, 10, 0.5), (60, 10, 25.0)],
)
def test_it_keeps_the_latest_sample_of_each_step_within_the_window(
    window: int, step: int, interval: float
) -> None:
    """However short the interval between decisions, a profile holds what the brute-force
    reference holds, never more than its capacity — and that bound is reached, so it is
    not a cap that drops samples of the window."""
    history = PoolHistory(window=window, step=step)
    recorded: list[float] = []
    reached = 0
    for i in range(int(3 * window / interval)):
        now = 1000.0 + i * interval
        history.record("default", now, BUSY, i, 1)
        recorded.append(now)
        kept = ats(history.samples("default", since=0))
        assert kept == reference(recorded, now, window, step)
        reached = max(reached, len(kept))
    assert reached <= history.capacity
    if interval < step:
        assert reached == history.capacity


def test_samples_since_a_time_and_profiles_apart() -> None:
    history = PoolHistory(window=3600, step=10)
    for at in (1000.0, 1100.0, 1200.0):
        history.record("default", at, BUSY, 1, 1)
    history.record("slow", 1200.0, {WorkerState.IDLE: 1}, 0, 1)
    assert ats(history.samples("default", since=1100.0)) == [1100.0, 1200.0]
    assert ats(history.samples("slow", since=0)) == [1200.0]
    assert history.samples("unknown", since=0) == []


def test_a_clock_stepped_back_drops_the_samples_after_it() -> None:
    history = PoolHistory(window=3600, step=10)
    for at in (1000.0, 1010.0, 1020.0, 1030.0):
        history.record("default", at, BUSY, 1, 1)
    history.record("default", 1015.0, BUSY, 2, 1)
    assert ats(history.samples("default", since=0)) == [1000.0, 1015.0]


@pytest.mark.parametrize(("window", "step"), [(60, 0), (60, -1), (60, 61)])
def test_a_step_must_fit_the_window(window: int, step: int) -> None:
    with pytest.raises(ValueError, match="step"):
        PoolHistory(window=window, step=step)
