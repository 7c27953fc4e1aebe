"""The limits an operator names under a dispatcher kill: a group's rolling upgrade under
its disruption budget, and live migrations under their action limit, while the
dispatcher is killed and started again mid-way (its successor counts what is in flight
from the ledger). The receiver counts, per call, the group's VMs and the action's calls
in progress; the accounting judges them against the run's ``GROUP_BUDGETS`` and
``ACTION_LIMITS`` (:mod:`.stack`)."""

from __future__ import annotations

import time
from typing import Any

from harness.faults.base import Ctx, FaultResult
from harness.faults.stack import ACTION_LIMITS, GROUP_BUDGETS

#: how long each of the phase's actions holds at the receiver: long enough to overlap
HOLD = 0.6
#: replicas of the group, and VMs whose live migrations the action limit holds
REPLICAS, MIGRATIONS = 5, 6
#: seconds the phase's events have to end once the last kill is over
BOUND = 120.0


def events(run: int) -> list[dict[str, Any]]:
    """An upgrade of each replica of the budgeted group (over three hosts) and a live
    migration of other VMs, each action holding :data:`HOLD` s; ids unique per run."""
    [group] = GROUP_BUDGETS
    upgrades = [
        {
            "id": f"lim{run}-up-{i}",
            "host": f"lim-h{i % 3}",
            "vm": f"{group}-{i}",
            "policy": "rollout",
            "action": "upgrade",
            "group": group,
            "payload": {"hold": HOLD},
        }
        for i in range(REPLICAS)
    ]
    [action] = ACTION_LIMITS
    moves = [
        {
            "id": f"lim{run}-lm-{i}",
            "host": f"lim-h{i % 3}",
            "vm": f"mig-{i}",
            "policy": "rebalance",
            "action": action,
            "payload": {"hold": HOLD},
        }
        for i in range(MIGRATIONS)
    ]
    return upgrades + moves


def named_limits(ctx: Ctx, times: int = 2) -> FaultResult:
    """Post the upgrade and the migrations, kill -9 the dispatcher while they run and
    start it again, ``times`` over; each round's events must all end ``succeeded``."""
    res = FaultResult("named limits under dispatcher kill -9")
    for run in range(times):
        ids = ctx.load.post(events(run), "named-limits")
        time.sleep(ctx.rng.uniform(HOLD, 2 * HOLD))  # some of them in action
        injected = time.time()
        assert ctx.stack.dispatcher is not None
        ctx.stack.dispatcher.kill()
        ctx.stack.restart_dispatcher()
        res.injected += 1
        res.recoveries.append(ctx.recovery(injected, time.time()))

        if not ctx.all_ended(ids, BOUND):
            res.note += f" round {run}: not every event ended within {BOUND:.0f} s;"
    return res
