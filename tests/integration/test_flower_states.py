"""What Flower shows of Carousel's tasks, with a real worker and a real ``carousel-flower``:
a task whose event failed is a FAILURE with the reason, one whose event succeeded a
SUCCESS with its result; the failed task was neither retried nor left unacked, and its
task-failed event freed the event's slot."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import kombu

from harness.processes import Stack, wait_until
from shared.topology import Topology
from tests.integration.test_e2e import event, post, stats


def test_a_failed_event_is_a_failure_in_flower_and_a_succeeded_one_a_success(
    stack_factory: Callable[..., Stack], amqp_url: str, prefix: str
) -> None:
    password = secrets.token_hex(12)
    # one slot, the reconcile an hour away: the second event is dispatched only once the
    # failed task's task-failed event has freed the slot
    stack = stack_factory(
        MAX_PARALLEL=1, RECONCILE_INTERVAL=3600, FLOWER_BASIC_AUTH=f"ops:{password}"
    )
    stack.producer()
    stack.dispatcher()
    worker = stack.worker()
    stack.flower()
    auth = ("ops", password)

    def task(task_id: str) -> dict[str, Any] | None:
        got = httpx.get(f"{stack.flower_url}/api/task/info/{task_id}", auth=auth, timeout=10)
        return got.json() if got.status_code == 200 else None

    def workers_heard() -> dict[str, bool]:
        got = httpx.get(f"{stack.flower_url}/api/workers?status=1", auth=auth, timeout=10)
        heard: dict[str, bool] = got.json()
        return heard

    # Flower follows the task events from its start: wait until it has heard the worker
    wait_until(
        lambda: any(workers_heard().values()),
        60,
        what="Flower hearing the worker's heartbeats",
    )

    [failing] = post(
        stack,
        [
            {
                "host": "h1",
                "vm": "vm1",
                "policy": "ops",
                "action": "heal",
                "id": "fails-1",
                "payload": {"simulate": {"fail": "disk full"}},
            }
        ],
    )
    failed = wait_until(
        lambda: (t := task(failing)) and t["state"] in ("FAILURE", "SUCCESS") and t,
        60,
        what="Flower showing the failed event's task ended",
    )
    assert failed["state"] == "FAILURE", failed
    assert failed["exception"] == "EventFailed('disk full')", failed
    assert not failed.get("retries"), "a failed event's task is not retried"
    shown = event(stack, failing)
    assert (shown["status"], shown["error"], shown["attempts"]) == ("failed", "disk full", 1)

    [succeeding] = post(
        stack, [{"host": "h2", "vm": "vm2", "policy": "ops", "action": "heal", "id": "ok-1"}]
    )
    succeeded = wait_until(
        lambda: (t := task(succeeding)) and t["state"] in ("FAILURE", "SUCCESS") and t,
        60,
        what="Flower showing the succeeded event's task ended (the slot freed)",
    )
    assert succeeded["state"] == "SUCCESS", succeeded
    assert "'status': 'succeeded'" in succeeded["result"], succeeded
    assert event(stack, succeeding)["status"] == "succeeded"
    assert stats(stack)["in_flight"] == 0

    # the failed task's message was acked: with the worker gone, nothing comes back
    worker.stop()
    with kombu.Connection(amqp_url) as conn:
        actions = Topology(prefix).actions_queue.name
        _, ready, _ = conn.default_channel.queue_declare(actions, passive=True)
    assert ready == 0
