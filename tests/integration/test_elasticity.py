"""The elasticity worker with real Celery worker processes on the real broker.

Timing is stated in evaluation intervals and read from the decisions the worker reports
at GET /status, not from a wall clock.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from harness.processes import BIN, Stack, wait_until
from tests.effects import EffectRecorder
from tests.integration.test_e2e import all_finished, event, post

UP = ("idle", "busy")


def status(stack: Stack) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{stack.elasticity_url}/status", timeout=10).json()
    return body


def profile(stack: Stack, name: str = "default") -> dict[str, Any]:
    got: dict[str, Any] = status(stack)["profiles"][name]
    return got


def up(p: dict[str, Any]) -> int:
    return sum(p["counts"][s] for s in UP)


def elastic_stack(
    stack_factory: Callable[..., Stack], profiles: dict[str, Any], **env: Any
) -> Stack:
    return stack_factory(
        ELASTICITY_INTERVAL=1,
        ELASTICITY_PROFILES=json.dumps(profiles),
        ELASTICITY_HEARTBEAT_TIMEOUT=6,
        **env,
    )


def test_burst_grows_the_pool_drains_it_and_shrinks_back(
    stack_factory: Callable[..., Stack],
    recorder: EffectRecorder,
    tmp_path: Path,
) -> None:
    stack = elastic_stack(
        stack_factory,
        {"default": {"min_workers": 1, "max_workers": 4, "scale_down_window": 3}},
        ELASTICITY_BUDGET=4,
        MAX_PARALLEL=8,
        DRIVER="webhook",
        WEBHOOK_URL=recorder.url,
        WORKER_LOG_DIR=tmp_path / "workers",
    )
    stack.producer()
    stack.dispatcher()
    stack.elasticity()
    wait_until(lambda: profile(stack)["counts"]["idle"] == 1, 60, what="minimum of 1 up")

    ids = post(
        stack,
        [
            {
                "host": f"h{i % 5}",
                "vm": f"vm{i}",
                "policy": "p",
                "action": "heal",
                "payload": {"delay": 1},
            }
            for i in range(200)
        ],
    )
    wait_until(lambda: up(profile(stack)) == 4, 60, what="pool at 4")
    # the first decision free to act on the whole burst asks for the whole pool at once
    # (an earlier one may have seen the burst's first events only, and its worker still
    # booting holds the next decision back: one scaling event at a time)
    seen = [d for d in profile(stack)["decisions"] if d["backlog"] >= 100]
    free = [d for d in seen if d.get("blocked_by") != "ScalingInProgress"]
    assert free and free[0]["capacity"] + free[0]["spawn"] >= 4, seen[:3]

    wait_until(lambda: all_finished(stack, ids), 180, what="burst drained")
    wait_until(
        lambda: up(profile(stack)) == 1 and profile(stack)["counts"]["draining"] == 0,
        60,
        what="pool back at its minimum",
    )
    assert {event(stack, i)["status"] for i in ids} == {"succeeded"}
    assert set(recorder.calls.values()) == {1} and len(recorder.calls) == 200
    # a worker retired while running a task would have had it redelivered (attempt 2)
    assert {event(stack, i)["attempts"] for i in ids} == {1}
    kinds = [e["kind"] for e in profile(stack)["events"]]
    assert kinds.count("spawned") >= 4 and kinds.count("retired") >= 3


def test_a_paused_dispatchers_backlog_does_not_grow_the_pool(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    """200 events a paused dispatcher holds cannot be dispatched: the elasticity worker,
    learning the pause from the dispatcher lease, keeps the pool at its minimum and says
    why, decision after decision; resumed, the same backlog grows it."""
    stack = elastic_stack(
        stack_factory,
        {"default": {"min_workers": 1, "max_workers": 4}},
        ELASTICITY_BUDGET=4,
        MAX_PARALLEL=8,
        START_PAUSED="true",
        WORKER_LOG_DIR=tmp_path / "workers",
    )
    stack.producer()
    stack.dispatcher()
    stack.elasticity()
    wait_until(lambda: profile(stack)["counts"]["idle"] == 1, 60, what="minimum of 1 up")
    post(
        stack,
        [
            {
                "host": f"h{i % 5}",
                "vm": f"vm{i}",
                "policy": "p",
                "action": "heal",
                "payload": {"simulate": {"duration": 0.5}},
            }
            for i in range(200)
        ],
    )

    def while_paused() -> list[dict[str, Any]]:
        return [d for d in profile(stack)["decisions"] if d["backlog"] >= 200]

    seen = wait_until(
        lambda: len(while_paused()) >= 4 and while_paused(),
        60,
        what="four decisions over the held backlog",
    )
    assert all(d["spawn"] == 0 and d["target"] == 1 for d in seen), seen
    assert all("the dispatcher is paused" in d["reason"] for d in seen), seen
    now = profile(stack)
    assert up(now) == 1 and now["counts"]["booting"] == 0
    assert [e["kind"] for e in now["events"]].count("spawned") == 1  # the minimum's

    assert httpx.post(f"{stack.dispatcher_url}/resume", timeout=10).status_code == 200
    wait_until(
        lambda: [e["kind"] for e in profile(stack)["events"]].count("spawned") > 1,
        60,
        what="the pool growing once resumed",
    )


def test_worker_killed_mid_task_is_redelivered_and_replaced(
    stack_factory: Callable[..., Stack],
    recorder: EffectRecorder,
) -> None:
    stack = elastic_stack(
        stack_factory,
        {"default": {"min_workers": 1, "max_workers": 1}},
        DRIVER="webhook",
        WEBHOOK_URL=recorder.url,
    )
    stack.producer()
    stack.dispatcher()
    stack.elasticity()
    [first] = wait_until(
        lambda: [w for w in profile(stack)["workers"] if w["state"] == "idle"],
        60,
        what="one idle worker",
    )
    [eid] = post(
        stack,
        [
            {
                "host": "h1",
                "vm": "vm1",
                "policy": "p",
                "action": "migrate",
                "id": "cut-off",
                "payload": {"delay": 3},
            }
        ],
    )
    wait_until(lambda: recorder.calls[eid] == 1, 30, what="action started")
    os.killpg(first["pid"], signal.SIGKILL)

    wait_until(lambda: event(stack, eid)["status"] == "succeeded", 90, what="succeeded")
    assert event(stack, eid)["attempts"] == 2
    p = profile(stack)
    assert up(p) == 1 and all(w["name"] != first["name"] for w in p["workers"])
    kinds = [e["kind"] for e in p["events"]]
    lost_at = kinds.index("lost")
    assert "spawned" in kinds[lost_at:], kinds  # replaced by the next decision


def test_worker_that_never_registers_is_replaced(
    stack_factory: Callable[..., Stack],
    tmp_path: Path,
) -> None:
    marker = tmp_path / "first-spawn-done"
    script = tmp_path / "flaky-worker"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ ! -e "{marker}" ]; then touch "{marker}"; exec sleep 600; fi\n'
        f'exec "{BIN / "carousel-worker"}"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    stack = elastic_stack(
        stack_factory,
        {"default": {"min_workers": 1, "max_workers": 1}},
        WORKER_COMMAND=str(script),
        SLACKER_THRESHOLD=3,
    )
    stack.producer()
    stack.dispatcher()
    svc = stack.elasticity(**{})
    assert svc.proc is not None
    wait_until(
        lambda: httpx.get(f"{stack.elasticity_url}/readyz").status_code == 200,
        60,
        what="a registered worker (ready)",
    )
    kinds = [e["kind"] for e in profile(stack)["events"]]
    assert kinds.count("spawned") == 2 and "slacker" in kinds, kinds


def test_two_profiles_share_the_budget_and_lend_it(
    stack_factory: Callable[..., Stack],
    recorder: EffectRecorder,
) -> None:
    pool = {"min_workers": 0, "max_workers": 4, "scale_down_window": 2}
    stack = elastic_stack(
        stack_factory,
        {"default": pool, "slow": pool},
        ACTION_PROFILES=json.dumps({"slow": ["migrate"]}),
        ELASTICITY_BUDGET=4,
        MAX_PARALLEL=8,
        DRIVER="webhook",
        WEBHOOK_URL=recorder.url,
    )
    stack.producer()
    stack.dispatcher()
    stack.elasticity()
    fast = post(
        stack,
        [
            {
                "host": "h1",
                "vm": f"a{i}",
                "policy": "p",
                "action": "heal",
                "payload": {"delay": 0.5},
            }
            for i in range(80)
        ],
    )
    slow = post(
        stack,
        [
            {
                "host": "h2",
                "vm": f"b{i}",
                "policy": "p",
                "action": "migrate",
                "payload": {"delay": 0.5},
            }
            for i in range(160)
        ],
    )

    def split_two_two() -> bool:
        """One evaluation that gave each profile a target of 2 (read from the decisions,
        not from sampling the pools, which boot and drain at their own pace)."""
        s = status(stack)["profiles"]
        default = {d["at"]: d["target"] for d in s["default"]["decisions"]}
        return any(default.get(d["at"]) == 2 and d["target"] == 2 for d in s["slow"]["decisions"])

    wait_until(split_two_two, 60, what="a decision giving 2 workers to each profile")
    wait_until(lambda: all_finished(stack, fast), 120, what="default profile drained")
    wait_until(lambda: up(profile(stack, "slow")) == 4, 60, what="slow profile lent all 4")
    wait_until(lambda: all_finished(stack, slow), 180, what="slow profile drained")
    for name in ("default", "slow"):
        for d in profile(stack, name)["decisions"]:
            assert d["allotted"] <= 4
    # budget never exceeded: every decision's workers (incl. booting/draining) fit in 4
    decisions = [d for p in status(stack)["profiles"].values() for d in p["decisions"]]
    by_time: dict[float, int] = {}
    for d in decisions:
        by_time[d["at"]] = by_time.get(d["at"], 0) + sum(
            d["workers"][s] for s in ("idle", "busy", "booting", "draining")
        )
    assert max(by_time.values()) <= 4


def test_steady_load_inside_the_tolerance_does_not_scale(
    stack_factory: Callable[..., Stack],
) -> None:
    """A steady backlog that asks for 2 workers: one scale-up to 2, then nothing for
    10 evaluations — not even when the backlog moves within the band. The backlog stays
    put because every event is for one VM (one action at a time, PER_VM_LIMIT) whose
    first action runs for minutes: the rest wait their turn, dispatchable, counted."""
    stack = elastic_stack(
        stack_factory,
        {
            "default": {
                "min_workers": 1,
                "max_workers": 4,
                "default_action_seconds": 0.2,
                "scale_down_window": 0,
            }
        },
    )
    stack.producer()
    stack.dispatcher()
    stack.elasticity()
    wait_until(lambda: up(profile(stack)) == 1, 60, what="minimum of 1 up")

    def one_vm(count: int) -> list[dict[str, Any]]:
        long = {"simulate": {"duration": 600}}
        return [
            {"host": "h1", "vm": "vm0", "policy": "p", "action": "heal", "payload": long}
            for _ in range(count)
        ]

    # 75 events (1 running, 74 waiting) x 0.2 s / (1 x 10 s) -> ceil(1.5) = 2 workers
    post(stack, one_vm(75))
    wait_until(lambda: up(profile(stack)) == 2, 60, what="scaled to 2")
    seen = len(profile(stack)["decisions"])
    post(stack, one_vm(20))  # 95 x 0.2 / 10 = 1.9 -> still 2
    wait_until(
        lambda: len(profile(stack)["decisions"]) >= min(seen + 10, 20),
        60,
        what="10 more evaluations",
    )
    p = profile(stack)
    later = p["decisions"][-10:]
    assert all(d["spawn"] == 0 and d["retire"] == 0 for d in later), later
    assert up(p) == 2 and p["counts"]["booting"] == 0 and p["counts"]["draining"] == 0
