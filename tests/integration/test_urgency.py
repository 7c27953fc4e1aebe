"""Priority classes and weights through a real stack: producer, dispatcher and Celery
workers as processes on a real broker (docs/design.md §5.1-5.2)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from harness.processes import Stack, wait_until


def post(stack: Stack, events: list[dict[str, Any]]) -> list[str]:
    r = httpx.post(f"{stack.producer_url}/events", json={"events": events}, timeout=30)
    assert r.status_code == 202, r.text
    ids: list[str] = r.json()["ids"]
    return ids


def dispatcher(stack: Stack, path: str, **params: Any) -> Any:
    r = httpx.get(f"{stack.dispatcher_url}{path}", params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def finished(stack: Stack, ids: list[str]) -> bool:
    for event_id in ids:
        r = httpx.get(f"{stack.producer_url}/events/{event_id}", timeout=10)
        if r.json()["status"] != "succeeded":
            return False
    return True


def test_urgent_heals_go_before_a_queued_upgrade_which_still_progresses(
    stack_factory: Callable[..., Stack],
) -> None:
    """40 background upgrades queued over 40 VMs (half background by their policy's
    class, half by their own priority), then 12 urgent heals of a failed host: the heals
    are dispatched first, and background still gets every fourth dispatch meanwhile (its
    minimum share 0.25)."""
    stack = stack_factory(
        MAX_PARALLEL=2,
        START_PAUSED="true",
        POLICY_PRIORITIES="upgrade=background",
        CLASS_MIN_SHARES="background=0.25",
        SIMULATED_DURATION="0.02",
    )
    stack.producer()
    stack.dispatcher()
    stack.worker()
    upgrades = [
        {
            "host": f"h{i % 10}",
            "vm": f"vm{i}",
            "policy": "upgrade" if i % 2 else "rollout",
            "action": "upgrade",
            "id": f"upgrade-{i}",
            **({} if i % 2 else {"priority": "background"}),
        }
        for i in range(40)
    ]
    heals = [
        {
            "host": "failed",
            "vm": f"f{i}",
            "policy": "ops",
            "action": "heal",
            "id": f"heal-{i}",
            "priority": "urgent",
        }
        for i in range(12)
    ]
    ids = post(stack, upgrades)
    wait_until(lambda: dispatcher(stack, "/stats")["held"] == 40, what="the upgrades held")
    ids += post(stack, heals)
    wait_until(lambda: dispatcher(stack, "/stats")["held"] == 52, what="the heals held")
    held = dispatcher(stack, "/classes")["classes"]
    assert (held["urgent"]["held"], held["background"]["held"]) == (12, 40)
    assert httpx.post(f"{stack.dispatcher_url}/resume", timeout=10).status_code == 200
    wait_until(lambda: finished(stack, ids), 120, what="every event succeeded")

    order = [d["event_id"] for d in dispatcher(stack, "/dispatches", limit=1000)]
    assert sorted(order) == sorted(ids) and len(set(order)) == len(order)
    classes = ["u" if e.startswith("heal-") else "b" for e in order]
    # the credit scheme, exactly: background every fourth pick, urgent the others
    assert "".join(classes[:16]) == "uuub" * 4
    last_heal = max(i for i, c in enumerate(classes) if c == "u")
    assert last_heal == 14 and classes[: last_heal + 1].count("b") == 3
    served = dispatcher(stack, "/classes")["classes"]
    assert (served["urgent"]["served"], served["background"]["served"]) == (12, 40)


def test_host_weights_and_classes_change_live(stack_factory: Callable[..., Stack]) -> None:
    """Weights set through the admin API: three flooding hosts get 1 : 2 : 4 of the
    dispatches while all three have work, however the heaviest spreads its flood."""
    stack = stack_factory(MAX_PARALLEL=1, START_PAUSED="true")
    stack.producer()
    stack.dispatcher()
    stack.worker()
    r = httpx.put(
        f"{stack.dispatcher_url}/weights", json={"hosts": {"a": 1, "b": 2, "c": 4}}, timeout=10
    )
    assert r.status_code == 200, r.text
    events = [
        {"host": h, "vm": f"{h}{i % n}", "policy": "p", "action": "update", "id": f"{h}-{i}"}
        for h, n in (("a", 7), ("b", 7), ("c", 35))
        for i in range(35)
    ]
    ids = post(stack, events)
    wait_until(lambda: dispatcher(stack, "/stats")["held"] == 49, what="one head per key held")
    httpx.post(f"{stack.dispatcher_url}/resume", timeout=10)
    wait_until(lambda: finished(stack, ids), 120, what="every event succeeded")
    order = [d["host"] for d in dispatcher(stack, "/dispatches", limit=1000)]
    assert Counter(order[:35]) == {"a": 5, "b": 10, "c": 20}
    assert dispatcher(stack, "/weights")["hosts"] == {"a": 1, "b": 2, "c": 4}
