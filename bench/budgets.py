"""A disruption budget on a real stack (docs/design.md §5.3).

A group of five replicas (``web``, one VM on each of five hosts) is upgraded, each
replica's upgrade carrying ``group``, while other work (updates of other VMs on the same
hosts) runs beside it; the webhook driver calls the fault suite's recording receiver
(:mod:`harness.recorder`), which counts, as each call is accepted, the group's VMs with
a call in progress. Run with ``GROUP_BUDGETS=web=1`` and, as the control that shows the
receiver sees overlaps when nothing prevents them, without a budget.

Reported per run: the most replicas of the group in action at once and the calls that
started while another replica was in action (the receiver's counts), whether all five
upgrades finished, the time from posting until the group's last upgrade ended and from
its first call (against five upgrades one after another: the time from posting includes
the stack's first dispatches, cold), and how many other calls started meanwhile."""

from __future__ import annotations

import time
from typing import Any

from bench.common import carousel, count_status, post_all, wait_for
from bench.report import save
from harness.recorder import COMPLETED, Receiver

GROUP = "web"
REPLICAS = 5
OTHERS = 60
HOLD_S = 0.5  # every call's length at the receiver
PARALLEL = 8


def _events() -> list[dict[str, Any]]:
    upgrades = [
        {
            "host": f"h{i}",
            "vm": f"{GROUP}-{i}",
            "policy": "rollout",
            "action": "upgrade",
            "group": GROUP,
            "id": f"up-{i}",
            "payload": {"hold": HOLD_S},
        }
        for i in range(REPLICAS)
    ]
    others = [
        {
            "host": f"h{i % REPLICAS}",
            "vm": f"app-{i % 30}",
            "policy": "ops",
            "action": "update",
            "id": f"other-{i}",
            "payload": {"hold": HOLD_S},
        }
        for i in range(OTHERS)
    ]
    # interleaved, as one batch: the group's upgrades arrive among the other work
    return [e for pair in zip(upgrades, others, strict=False) for e in pair] + others[REPLICAS:]


def measure(budget: int) -> dict[str, Any]:
    receiver = Receiver()
    env = {
        "DRIVER": "webhook",
        "WEBHOOK_URL": receiver.url,
        "MAX_PARALLEL": PARALLEL,
        "WORKER_CONCURRENCY": PARALLEL,
        "GROUP_BUDGETS": f"{GROUP}={budget}" if budget else "",
    }
    try:
        with carousel(**env) as (stack, store):
            stack.producer()
            stack.dispatcher()
            stack.worker()
            events = _events()
            posted = time.time()
            post_all(stack.producer_url, [events], clients=1)
            wait_for(
                lambda: count_status(store, "succeeded", "failed") >= len(events),
                300,
                "every event ended",
            )
            succeeded = count_status(store, "succeeded")
        calls = [c for c in receiver.calls() if c.outcome == COMPLETED]
    finally:
        receiver.close()
    web = [c for c in calls if c.group == GROUP]
    others = [c for c in calls if c.group is None]
    first = min(c.started for c in web)
    last = max(c.ended or c.started for c in web)
    return {
        "GROUP_BUDGETS": f"{GROUP}={budget}" if budget else "(none)",
        "MAX_PARALLEL": PARALLEL,
        "replicas": REPLICAS,
        "other events": OTHERS,
        "call s": HOLD_S,
        "most replicas in action at once": max(c.running_group for c in web),
        "replica calls started beside another": sum(c.running_group >= 2 for c in web),
        "upgrades finished": len({c.event_id for c in web}),
        "events succeeded": succeeded,
        "until the group's upgrade ended s": round(last - posted, 3),
        "from its first call s": round(last - first, 3),
        "one after another s": REPLICAS * HOLD_S,
        "other calls started meanwhile": sum(first <= c.started <= last for c in others),
    }


def run() -> None:
    rows = [measure(1), measure(0)]
    judged = rows[0]
    took = judged["until the group's upgrade ended s"]
    save(
        "budgets",
        f"Disruption budget 1 on a {REPLICAS}-replica group beside other work: at most "
        f"{judged['most replicas in action at once']} replica(s) in action at once, "
        f"{judged['upgrades finished']} of {REPLICAS} upgrades finished in "
        f"{took:.1f} s",
        rows,
    )


if __name__ == "__main__":
    run()
