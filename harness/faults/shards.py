"""Faults of dispatcher shards (``DISPATCHER_PARTITIONS`` > 0; a profile with
:attr:`.stack.Profile.shards`): a shard killed under load and its partitions taken over
(``shard-kill``), a shard joining under load and one leaving cleanly (``shard-join-leave``).

Each waits, after what it did, until every partition is served again by exactly one live
shard (:meth:`.stack.FaultStack.partitions_served`, from their ``/stats``); its recovery
is the time from the injection until an event of a host of the partitions that moved was
dispatched after that. The accounting judges the events as always (each once, in its
key's order, within ``MAX_PARALLEL`` overall and one action per VM): a key served by two
shards at once, or a head passed to another shard before its elder ran, shows there.
"""

from __future__ import annotations

import time

from harness.faults.base import Ctx, FaultResult
from harness.faults.stack import FaultStack
from shared.partition_leases import partition_of

#: how long the partitions of a shard killed or leaving may take to be served again
#: (a killed one's expire after DISPATCHER_LEASE_SECONDS, 4 s in the suite)
TAKEOVER_BOUND = 60.0


def _load_hosts(stack: FaultStack, partitions: list[int]) -> list[str]:
    """The steady load's hosts in ``partitions``."""
    keys = stack.profile.keys()
    hosts = sorted({host for host, _, _ in keys})
    return [h for h in hosts if partition_of(h, stack.profile.partitions) in partitions]


def _victim(ctx: Ctx, serving: dict[int, list[int]], first: bool = True) -> int:
    """A live shard (by index) serving hosts of the steady load, so that taking it away
    moves work under way; ``first``: the stack's first dispatcher may be chosen."""
    allowed = [i for i in serving if first or i != 0]
    loaded = [i for i in allowed if _load_hosts(ctx.stack, serving[i])]
    return ctx.rng.choice(loaded or allowed)


def shard_kill(ctx: Ctx, times: int = 2) -> FaultResult:
    """kill -9 a shard serving hosts of the load, just after a burst; wait until the
    others serve its partitions (their leases expire, the survivors take them with a
    larger fencing token), then start it again and wait until it has its share."""
    res = FaultResult("shard kill -9")
    stack = ctx.stack
    for _ in range(times):
        ctx.load.post_async(ctx.load.make(20))
        time.sleep(ctx.rng.uniform(0.0, 1.0))
        serving = stack.serving()
        victim = _victim(ctx, serving)
        moved = serving[victim]
        injected = time.time()
        stack.kill_dispatcher(victim)
        ctx.log(f"  killed shard {victim} serving {moved} ({_load_hosts(stack, moved)})")
        taken = stack.wait_partitions_served(TAKEOVER_BOUND)
        ctx.log(f"  taken over after {taken - injected:.1f} s: {stack.serving()}")
        res.injected += 1
        res.recoveries.append(ctx.recovery(injected, taken, hosts=_load_hosts(stack, moved)))
        restarted = time.time()
        stack.restart_dispatcher(victim)
        shared = stack.wait_partitions_served(TAKEOVER_BOUND, every_shard=True)
        ctx.log(f"  restarted, its share after {shared - restarted:.1f} s: {stack.serving()}")
    return res


def shard_join_leave(ctx: Ctx) -> FaultResult:
    """Under load, start one more shard and wait until it serves its share (the others
    release partitions to it, each after its session handed their heads back); then stop
    another (SIGTERM, not the first: the harness asks that one) and wait until the rest
    serve its partitions — released at its exit, not left to expire."""
    res = FaultResult("shard join, then leave")
    stack = ctx.stack
    before = stack.serving()
    injected = time.time()
    joined = stack.add_dispatcher(wait=False)
    served = stack.wait_partitions_served(TAKEOVER_BOUND, every_shard=True)
    serving = stack.serving()
    moved = serving[joined]
    ctx.log(
        f"  shard {joined} joined, serving {moved} after {served - injected:.1f} s "
        f"(before: {before}; now: {serving})"
    )
    res.injected += 1
    res.recoveries.append(ctx.recovery(injected, served, hosts=_load_hosts(stack, moved)))
    time.sleep(ctx.rng.uniform(1.0, 3.0))  # under load with one shard more

    serving = stack.serving()
    victim = _victim(ctx, serving, first=False)
    moved = serving[victim]
    name = stack.stats(stack.dispatcher_url(victim))["shard"]["name"]
    injected = time.time()
    stack.stop_dispatcher(victim)
    left = time.time()
    still = stack.ledger.rows(
        "SELECT name FROM leases WHERE holder = :shard AND name != 'dispatcher'", shard=name
    )
    if still:
        res.note += f" shard {name} stopped holding {sorted(n for (n,) in still)} (not released);"
    served = stack.wait_partitions_served(TAKEOVER_BOUND)
    ctx.log(
        f"  shard {victim} ({name}) left in {left - injected:.1f} s, its partitions {moved} "
        f"served again after {served - injected:.1f} s: {stack.serving()}"
    )
    res.injected += 1
    res.recoveries.append(ctx.recovery(injected, served, hosts=_load_hosts(stack, moved)))
    return res
