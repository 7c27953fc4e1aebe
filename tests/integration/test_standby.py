"""One active dispatcher: a second one beside it (a rolling update, a second ``make up``)
waits as a standby and takes over when the first dies; limits hold throughout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from harness.processes import Stack, wait_until
from scheduler.dispatcher.readiness import STANDBY
from tests.effects import EffectRecorder
from tests.integration.test_e2e import all_finished, event, post


def _stats(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/stats", timeout=5).json()
    return body


def test_a_second_dispatcher_waits_as_a_standby_and_takes_over(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    stack = stack_factory(
        DRIVER="webhook",
        WEBHOOK_URL=recorder.url,
        MAX_PARALLEL=4,
        DISPATCHER_LEASE_SECONDS=2,
    )
    stack.producer()
    first = stack.dispatcher()
    stack.worker()
    _, second_url = stack.another_dispatcher()
    wait_until(lambda: _stats(second_url)["standby"] is True, 30, what="second is a standby")
    assert _stats(second_url)["active"] is False
    assert _stats(second_url)["not_ready"] == STANDBY
    said = httpx.get(f"{second_url}/readyz", timeout=5)
    assert (said.status_code, said.json()) == (503, {"status": STANDBY})
    first_stats = _stats(stack.dispatcher_url)
    assert (first_stats["active"], first_stats["standby"], first_stats["not_ready"]) == (
        True,
        False,
        None,
    )

    events = [
        {
            "host": "h1",
            "vm": f"vm{v}",
            "policy": f"p{p}",
            "action": "heal",
            "payload": {"delay": 0.2},
        }
        for v in range(4)
        for p in range(5)
    ]
    ids = post(stack, events)
    wait_until(lambda: len(recorder.calls) >= 4, 30, what="first actions running")
    assert _stats(second_url)["dispatched_total"] == 0  # the standby dispatches nothing

    first.kill()  # kill -9: its lease runs out, the standby takes over
    wait_until(lambda: _stats(second_url)["active"] is True, 30, what="the standby took over")
    wait_until(lambda: _stats(second_url)["not_ready"] is None, 30, what="the standby dispatching")
    assert _stats(second_url)["standby"] is False
    wait_until(lambda: all_finished(stack, ids), 120, what="every event finished")
    assert {event(stack, i)["status"] for i in ids} == {"succeeded"}
    assert sorted(recorder.calls) == sorted(ids) and set(recorder.calls.values()) == {1}
    assert recorder.max_per_vm == 1, "two actions of one VM ran at once"
    assert recorder.max_running <= 4
    assert _stats(second_url)["dispatched_total"] > 0
