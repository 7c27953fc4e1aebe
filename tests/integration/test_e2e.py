"""End to end: producer, dispatcher and Celery workers as real processes on a real broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from harness.processes import Stack, wait_until
from tests.effects import EffectRecorder


def post(stack: Stack, events: list[dict[str, Any]], **kw: Any) -> list[str]:
    r = httpx.post(f"{stack.producer_url}/events", json={"events": events}, timeout=30, **kw)
    assert r.status_code == 202, r.text
    ids: list[str] = r.json()["ids"]
    return ids


def event(stack: Stack, event_id: str) -> dict[str, Any]:
    r = httpx.get(f"{stack.producer_url}/events/{event_id}", timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def stats(stack: Stack) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{stack.dispatcher_url}/stats", timeout=10).json()
    return body


def all_finished(stack: Stack, ids: list[str]) -> bool:
    return all(event(stack, i)["status"] in ("succeeded", "failed") for i in ids)


def test_design_order_and_every_event_succeeds(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(MAX_PARALLEL=1, START_PAUSED="true")
    stack.producer()
    stack.dispatcher()
    stack.worker()
    events = [
        {"host": h, "vm": v, "policy": p, "action": "heal", "id": f"{h}-{v}-{p}"}
        for h in ("C1", "C2", "C3")
        for v in ("VM1", "VM2")
        for p in ("pol1", "pol2")
    ]
    ids = post(stack, events)
    wait_until(lambda: stats(stack)["held"] == 12, what="dispatcher holding all 12 heads")
    assert stats(stack)["dispatched_total"] == 0  # paused
    assert httpx.post(f"{stack.dispatcher_url}/resume").status_code == 200
    wait_until(lambda: all_finished(stack, ids), 60, what="all events finished")

    order = [
        d["event_id"]
        for d in httpx.get(f"{stack.dispatcher_url}/dispatches", params={"limit": 100}).json()
    ]
    expected = [
        f"{h}-{v}-{p}" for p in ("pol1", "pol2") for v in ("VM1", "VM2") for h in ("C1", "C2", "C3")
    ]
    assert order == expected
    for i in ids:
        got = event(stack, i)
        assert got["status"] == "succeeded" and got["attempts"] == 1
        assert got["accepted_at"] <= got["dispatched_at"] <= got["started_at"] <= got["finished_at"]


def test_flooding_vm_does_not_starve_its_neighbours(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    stack = stack_factory(
        MAX_PARALLEL=3,
        START_PAUSED="true",
        DRIVER="webhook",
        WEBHOOK_URL=recorder.url,
        WORKER_CONCURRENCY=6,
    )
    stack.producer()
    stack.dispatcher()
    stack.worker()
    flood = [
        {
            "host": "h1",
            "vm": "noisy",
            "policy": "heal",
            "action": "heal",
            "id": f"flood-{i}",
            "payload": {"delay": 0.05},
        }
        for i in range(30)
    ]
    quiet = [
        {
            "host": "h1",
            "vm": f"vm{i}",
            "policy": "heal",
            "action": "migrate",
            "id": f"quiet-{i}",
            "payload": {"delay": 0.05},
        }
        for i in range(20)
    ]
    ids = post(stack, flood) + post(stack, quiet)
    wait_until(lambda: stats(stack)["held"] == 21, what="one head per VM held")
    httpx.post(f"{stack.dispatcher_url}/resume")
    wait_until(lambda: all_finished(stack, ids), 90, what="all events finished")

    order = [
        d["event_id"]
        for d in httpx.get(f"{stack.dispatcher_url}/dispatches", params={"limit": 1000}).json()
    ]
    assert sorted(order) == sorted(ids)
    second_flood = order.index("flood-1")
    assert all(order.index(f"quiet-{i}") < second_flood for i in range(20))
    assert recorder.max_running <= 3
    assert recorder.max_per_vm == 1
    assert all(n == 1 for n in recorder.calls.values()) and len(recorder.calls) == 50
    flood_order = [i for i in order if i.startswith("flood-")]
    assert flood_order == [f"flood-{i}" for i in range(30)]  # FIFO per key


def test_dispatcher_kill_9_loses_nothing_and_runs_nothing_twice(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    stack = stack_factory(
        MAX_PARALLEL=4, DRIVER="webhook", WEBHOOK_URL=recorder.url, WORKER_CONCURRENCY=6
    )
    stack.producer()
    dispatcher = stack.dispatcher()
    stack.worker()
    events = [
        {
            "host": f"h{i % 3}",
            "vm": f"vm{i % 7}",
            "policy": f"p{i % 2}",
            "action": "resize",
            "id": f"ev-{i}",
            "payload": {"delay": 0.1},
        }
        for i in range(60)
    ]
    ids = post(stack, events)
    wait_until(lambda: stats(stack)["in_flight"] >= 3, what="actions in flight")
    dispatcher.kill()
    dispatcher_again = stack.dispatcher()
    assert dispatcher_again.proc is not None
    wait_until(lambda: all_finished(stack, ids), 120, what="all events finished")

    for i in ids:
        got = event(stack, i)
        assert got["status"] == "succeeded", got
    assert sorted(recorder.calls) == sorted(ids)
    assert set(recorder.calls.values()) == {1}, "an action ran twice"
    assert recorder.max_running <= 4, "limits did not hold across the restart"
    assert recorder.max_per_vm == 1


def test_bad_input_and_missing_token(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(CAROUSEL_API_TOKEN="s3cret", MAX_BODY_BYTES=100_000)
    stack.producer()
    auth = {"Authorization": "Bearer s3cret"}
    ok = {"host": "h1", "vm": "vm1", "policy": "p", "action": "heal"}

    r = httpx.post(f"{stack.producer_url}/events", json=ok)
    assert r.status_code == 401
    r = httpx.post(
        f"{stack.producer_url}/events", json=ok, headers={"Authorization": "Bearer wrong"}
    )
    assert r.status_code == 401

    bad_cases: list[tuple[dict[str, Any], str]] = [
        ({**ok, "host": "bad/host"}, "host"),
        ({**ok, "action": "explode"}, "action"),
        ({**ok, "vm": "x" * 129}, "vm"),
        ({"events": [ok, {**ok, "policy": ""}]}, "policy"),
        ({"events": []}, "events"),
        ({**ok, "payload": {"blob": "x" * 70000}}, "payload"),
    ]
    for body, field in bad_cases:
        r = httpx.post(f"{stack.producer_url}/events", json=body, headers=auth)
        assert r.status_code == 422, (body, r.text)
        assert any(field in map(str, err["loc"]) for err in r.json()["detail"]), r.text
    big = json.dumps({"events": [{**ok, "payload": {"pad": "x" * 200}}] * 1000}).encode()
    assert len(big) > 100_000
    r = httpx.post(f"{stack.producer_url}/events", content=big, headers=auth)
    assert r.status_code == 413
    r = httpx.post(
        f"{stack.producer_url}/events",
        content=iter([big[:60_000], big[60_000:]]),
        headers={**auth, "content-type": "application/json"},
    )  # chunked
    assert r.status_code == 413, r.text
    mapping = httpx.get(f"{stack.producer_url}/mapping", headers=auth).json()
    assert mapping["hosts"] == {}, "a refused request changed the mapping"

    r = httpx.post(f"{stack.producer_url}/events", json=ok, headers=auth)
    assert r.status_code == 202

    # the dispatcher's controls need the same token; its views do not
    stack.dispatcher()
    assert httpx.post(f"{stack.dispatcher_url}/pause").status_code == 401
    assert httpx.put(f"{stack.dispatcher_url}/limits", json={"per_vm": 2}).status_code == 401
    assert stats(stack)["paused"] is False and stats(stack)["limits"]["per_vm"] == 1
    assert httpx.post(f"{stack.dispatcher_url}/pause", headers=auth).status_code == 200
    assert stats(stack)["paused"] is True


def test_a_workers_task_events_free_the_slots(stack_factory: Callable[..., Stack]) -> None:
    """The worker sends no completion message of its own: its task-succeeded events are
    the completions. With the reconcile an hour away, one slot and twenty events, every
    event ends only if each task event frees its slot."""
    stack = stack_factory(MAX_PARALLEL=1, RECONCILE_INTERVAL="3600")
    stack.producer()
    stack.dispatcher()
    stack.worker()
    ids = post(
        stack,
        [{"host": "h", "vm": f"v{i % 4}", "policy": "p", "action": "heal"} for i in range(20)],
    )
    wait_until(lambda: all_finished(stack, ids), 60, what="all events finished")
    assert stats(stack)["in_flight"] == 0
