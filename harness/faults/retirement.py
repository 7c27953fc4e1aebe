"""Retire storms under load: keys that live only while they have work
(``KEY_IDLE_SECONDS``), retired by the hundred while events keep arriving for them.

For the phase the dispatcher retires a key one second after its last work. Each round
posts one event to each of a few hundred keys of its own, so that all of them go idle
together and retire in a storm (a ledger transaction and its queue deletes per batch of
them); while that storm runs, new events keep arriving for random keys among them, and
in one round the dispatcher is killed (kill -9) in the middle of it. The load of the
whole run goes on meanwhile. The accounting judges every event as always: each runs
once, in its key's order, nothing is lost — whether it arrived before its key retired,
during, or after (its key then added again)."""

from __future__ import annotations

import time
from typing import Any

from harness.faults.base import Ctx, FaultResult

#: keys of a round, over this many hosts
KEYS, HOSTS = 300, 10
#: seconds without work before a key retires, for the phase
IDLE = 1.0
#: seconds of posts to the retiring keys per round, and events per post
STORM, PER_POST = 3.0, 10
#: seconds the round's events have to end
BOUND = 120.0


def retire_storm(ctx: Ctx, rounds: int = 3) -> FaultResult:
    res = FaultResult("retire storms under load (KEY_IDLE_SECONDS 1 s)")
    ctx.stack.reconfigure_dispatcher(KEY_IDLE_SECONDS=str(IDLE))
    try:
        for run in range(rounds):
            keys = [(f"rs{run}-h{i % HOSTS}", f"rs{run}-vm{i}", "storm") for i in range(KEYS)]
            first = [e for key in keys for e in ctx.load.make(1, {"hold": 0.01}, key)]
            ids = ctx.load.post(first, "retire-storm")
            _ended(ctx, ids, res, run)
            # every key goes idle now and retires about IDLE later: post into the storm
            injected = time.time()
            kill_at = injected + IDLE + ctx.rng.uniform(0.0, 1.0) if run == 1 else None
            later: list[str] = []
            while time.time() < injected + STORM:
                batch: list[dict[str, Any]] = []
                for _ in range(PER_POST):
                    batch += ctx.load.make(1, {"hold": 0.01}, ctx.rng.choice(keys))
                later += ctx.load.post(batch, "retire-storm")
                if kill_at is not None and time.time() >= kill_at:
                    assert ctx.stack.dispatcher is not None
                    ctx.stack.dispatcher.kill()
                    ctx.stack.restart_dispatcher()
                    kill_at = None
                time.sleep(ctx.rng.uniform(0.05, 0.2))
            res.injected += 1
            _ended(ctx, later, res, run)
            res.recoveries.append(ctx.recovery(injected, time.time()))
    finally:
        ctx.stack.reconfigure_dispatcher()  # the stack's own settings again
    return res


def _ended(ctx: Ctx, ids: list[str], res: FaultResult, run: int) -> None:
    if not ctx.all_ended(ids, BOUND):
        res.note += f" round {run}: not every event ended within {BOUND:.0f} s;"
