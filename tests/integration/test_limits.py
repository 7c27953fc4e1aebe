"""The limits an operator names through a real stack (docs/design.md §5.3): producer,
dispatcher and Celery workers as processes on a real broker, the webhook driver pointed at
the fault suite's recording receiver, which counts per call the group's VMs and the
action's calls in progress."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.processes import Stack, wait_until
from harness.recorder import COMPLETED, Receiver
from shared.store import Store
from tests.integration.test_monitoring import monitored


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def post(stack: Stack, events: list[dict[str, Any]]) -> list[str]:
    r = httpx.post(f"{stack.producer_url}/events", json={"events": events}, timeout=30)
    assert r.status_code == 202, r.text
    ids: list[str] = r.json()["ids"]
    return ids


def succeeded(stack: Stack, ids: list[str]) -> bool:
    for event_id in ids:
        r = httpx.get(f"{stack.producer_url}/events/{event_id}", timeout=10)
        if r.json()["status"] != "succeeded":
            return False
    return True


def test_a_group_budget_holds_a_rolling_upgrade_while_other_work_goes(
    stack_factory: Callable[..., Stack], receiver: Receiver
) -> None:
    """Five replicas of a group with budget 1, an upgrade of each, beside heals of other
    VMs and live migrations under their limit of 2: never two replicas in action at once,
    the upgrade finishes, and the other work is not held behind it."""
    stack = stack_factory(
        DRIVER="webhook",
        WEBHOOK_URL=receiver.url,
        MAX_PARALLEL=6,
        GROUP_BUDGETS="web=1",
        ACTION_LIMITS="live_migrate=2",
    )
    stack.producer()
    stack.dispatcher()
    stack.worker(WORKER_CONCURRENCY="6")
    upgrades = [
        {
            "host": f"h{i % 3}",
            "vm": f"web-{i}",
            "policy": "rollout",
            "action": "upgrade",
            "group": "web",
            "id": f"up-{i}",
            "payload": {"hold": 0.4},
        }
        for i in range(5)
    ]
    others = [
        {
            "host": f"h{i % 3}",
            "vm": f"app-{i}",
            "policy": "ops",
            "action": "live_migrate" if i < 4 else "heal",
            "id": f"other-{i}",
            "payload": {"hold": 0.4},
        }
        for i in range(12)
    ]
    ids = post(stack, upgrades + others)
    wait_until(lambda: succeeded(stack, ids), 120, what="every event succeeded")

    calls = [c for c in receiver.calls() if c.outcome == COMPLETED]
    assert sorted(c.event_id for c in calls) == sorted(ids)
    web = [c for c in calls if c.group == "web"]
    assert len(web) == 5 and max(c.running_group for c in web) == 1
    moves = [c for c in calls if c.action == "live_migrate"]
    assert max(c.running_action for c in moves) == 2
    # the other work went while the upgrade was still rolling: before its last replica
    last_replica = max(c.started for c in web)
    assert sum(1 for c in calls if c.group is None and c.started < last_replica) >= 8
    view = httpx.get(f"{stack.dispatcher_url}/limits/named", timeout=10).json()
    assert view["groups"]["web"] == {"budget": 1, "in_action": 0, "waiting": 0}
    assert view["actions"]["live_migrate"]["limit"] == 2


def test_an_event_naming_no_group_gets_the_one_the_monitoring_saw(
    stack_factory: Callable[..., Stack], tmp_path: Path, db_url: str
) -> None:
    """The producer stamps the group simcloud reports for the VM; the ledger keeps it,
    and the budget holds the group's VMs one at a time."""
    stack = monitored(stack_factory, tmp_path, "--group", "web:3:1:5", GROUP_BUDGETS="web=1")
    state = httpx.get(f"{stack.env['SIMCLOUD_URL']}/v1/state", timeout=10).json()
    replicas = {v["name"]: v["host"] for v in state["vms"] if v["name"].startswith("web-")}
    assert len(replicas) == 3
    wait_until(
        lambda: (
            httpx.get(f"{stack.producer_url}/monitor/status", timeout=10).json()["sources"][0][
                "vms"
            ]
            >= len(state["vms"])
        ),
        30,
        what="the monitoring saw every VM",
    )
    ids = post(
        stack,
        [
            {"host": host, "vm": vm, "policy": "rollout", "action": "update", "id": f"u-{vm}"}
            for vm, host in replicas.items()
        ],
    )
    wait_until(lambda: succeeded(stack, ids), 60, what="the group's updates succeeded")
    store = Store.connect(db_url)
    try:
        assert {store.event(i).group for i in ids} == {"web"}  # type: ignore[union-attr]
        rows = [store.get(i) for i in ids]
    finally:
        store.engine.dispose()
    spans = sorted((r["started_at"], r["finished_at"]) for r in rows if r is not None)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
