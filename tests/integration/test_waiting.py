"""Why is it waiting, through a real stack: producer, dispatcher and a Celery worker as
real processes on a real broker, a long action held by a webhook receiver
(EffectRecorder). ``GET /events/{id}`` says what holds each queued event, from the
ledger or from the dispatcher holding its head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from harness.processes import Stack, wait_until
from tests.effects import EffectRecorder

#: the first action's length: it holds the VM for the whole test
LONG = 20


def post(stack: Stack, event_id: str, policy: str, delay: float = 0) -> None:
    body = {
        "id": event_id,
        "host": "h1",
        "vm": "vm1",
        "policy": policy,
        "action": "heal",
        "payload": {"delay": delay},
    }
    r = httpx.post(f"{stack.producer_url}/events", json=body, timeout=30)
    assert r.status_code == 202, r.text


def event(stack: Stack, event_id: str) -> dict[str, Any]:
    r = httpx.get(f"{stack.producer_url}/events/{event_id}", timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def reason(stack: Stack, event_id: str) -> str | None:
    waiting = event(stack, event_id)["waiting"]
    return None if waiting is None else str(waiting["reason"])


def test_a_queued_event_says_what_holds_it(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    stack = stack_factory(
        DRIVER="webhook", WEBHOOK_URL=recorder.url, PER_VM_LIMIT=1, MAX_PARALLEL=4
    )
    stack.producer()
    stack.dispatcher()
    stack.worker()

    post(stack, "long", "p", delay=LONG)
    wait_until(lambda: event(stack, "long")["status"] == "running", 30, what="long running")
    assert event(stack, "long")["waiting"] is None

    # the VM's other policy: its head is held by the dispatcher, the VM busy
    post(stack, "second", "q")
    wait_until(lambda: reason(stack, "second") == "vm_busy", 30, what="second: VM busy")
    waiting = event(stack, "second")["waiting"]
    assert (waiting["event"], waiting["source"]) == ("long", "dispatcher")
    assert waiting["text"] == "VM vm1 busy with long (1/1 per VM)"

    # behind it in its key: the ledger says so
    post(stack, "third", "q")
    waiting = event(stack, "third")["waiting"]
    assert (waiting["reason"], waiting["event"], waiting["ahead"]) == ("behind_in_key", "second", 1)
    assert waiting["text"] == "2nd in its key (host h1, vm vm1, policy q): behind second"

    # paused: the dispatcher says so at once, the ledger at its next lease renewal
    assert httpx.post(f"{stack.dispatcher_url}/pause", timeout=10).status_code == 200
    wait_until(lambda: reason(stack, "second") == "paused", 30, what="second: paused")
    wait_until(lambda: reason(stack, "third") == "paused", 30, what="third: paused (ledger)")
    assert httpx.post(f"{stack.dispatcher_url}/resume", timeout=10).status_code == 200
    wait_until(lambda: reason(stack, "second") == "vm_busy", 30, what="resumed")

    # the host unavailable: the ledger says so
    r = httpx.put(
        f"{stack.producer_url}/hosts/h1/availability", json={"available": False}, timeout=10
    )
    assert r.status_code == 200, r.text
    waiting = event(stack, "second")["waiting"]
    assert (waiting["reason"], waiting["text"]) == ("host_unavailable", "host h1 is unavailable")

    # the admin API shows the limits' use
    limits = httpx.get(f"{stack.dispatcher_url}/limits", timeout=10).json()
    assert limits["max_parallel"] == {"limit": 4, "in_use": 1}
    assert limits["per_vm"]["busiest"] == "h1/vm1"
