"""Faults that kill, restart or add processes: producer, scheduler, workers, broker."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import wait

from harness.faults import pids
from harness.faults.base import Ctx, FaultResult
from harness.processes import Service, free_port, wait_until
from harness.recorder import ABANDONED, RUNNING, Call


def producer_kill(ctx: Ctx, times: int = 2) -> FaultResult:
    """kill -9 the producer while four 40-event batches are being posted, then start it
    again; the client retries those batches with the same ids."""
    res = FaultResult("producer kill -9")
    for _ in range(times):
        burst = [ctx.load.post_async(ctx.load.make(40)) for _ in range(4)]
        time.sleep(ctx.rng.uniform(0.02, 0.3))  # into the burst
        injected = time.time()
        assert ctx.stack.producer is not None
        ctx.stack.producer.kill()
        ctx.stack.restart_producer()
        restored = time.time()
        res.injected += 1
        res.recoveries.append(ctx.recovery(injected, restored, accept=True))
        _done, pending = wait(burst, timeout=120)
        if pending:
            res.note = f"{len(pending)} burst batches still without a 202 after 120 s"
    return res


def scheduler_kill(ctx: Ctx, times: int = 3) -> FaultResult:
    """kill -9 the scheduler at a random moment after a burst (so it is likely between
    consuming and dispatching, or publishing and acking), then start it again."""
    res = FaultResult("scheduler kill -9")
    for _ in range(times):
        ctx.load.post_async(ctx.load.make(20))
        time.sleep(ctx.rng.uniform(0.0, 1.0))
        injected = time.time()
        assert ctx.stack.scheduler is not None
        ctx.stack.scheduler.kill()
        ctx.stack.restart_scheduler()
        res.injected += 1
        res.recoveries.append(ctx.recovery(injected, time.time()))
    return res


#: how long a kill target's action holds at the receiver: the kill lands mid-call
KILL_HOLD = 2.0


def _kill_target(ctx: Ctx) -> tuple[Call, int]:
    """Post an event whose action holds :data:`KILL_HOLD` s at the receiver; once its
    call is in progress, return it with the pool child making it."""
    [eid] = ctx.load.post(ctx.load.make(1, {"hold": KILL_HOLD}), "kill-target")

    def found() -> tuple[Call, int] | None:
        for call in ctx.stack.receiver.open_calls():
            roots = ctx.stack.worker_pids()
            if call.event_id == eid and time.time() - call.started < KILL_HOLD / 2:
                pid = pids.caller_pid(call.client_port, ctx.stack.receiver.port, roots)
                if pid is not None and pid not in roots:
                    return call, pid
        return None

    got = wait_until(found, 60, 0.01, what=f"the action of {eid} in progress")
    assert got is not None
    return got


def _cut_off(ctx: Ctx, call: Call, res: FaultResult) -> None:
    """Check the kill cut the call off (it ends abandoned, not completed)."""
    wait_until(lambda: call.outcome != RUNNING, 10, what=f"the call of {call.event_id} ended")
    if call.outcome != ABANDONED:
        res.note += f" {call.event_id}'s call ended {call.outcome} despite the kill;"


def worker_child_kill(ctx: Ctx, times: int = 3) -> FaultResult:
    """kill -9 the pool child running an action, mid-call; Celery replaces the child and
    the event must run again (its first call was cut off)."""
    res = FaultResult("worker pool child kill -9")
    for _ in range(times):
        call, pid = _kill_target(ctx)
        injected = time.time()
        os.kill(pid, signal.SIGKILL)
        ctx.log(f"  killed pool child {pid} during {call.event_id}")
        _cut_off(ctx, call, res)
        res.injected += 1
        res.recoveries.append(ctx.recovery(injected, injected))
    return res


def worker_main_kill(ctx: Ctx, times: int = 1) -> FaultResult:
    """kill -9 the main process of the worker running an action, mid-call (its pool
    children die with it), then start a new worker."""
    res = FaultResult("worker main kill -9")
    for _ in range(times):
        call, pid = _kill_target(ctx)
        [worker] = [
            w
            for w in ctx.stack.live_workers()
            if w.proc is not None and pid in pids.descendants(w.proc.pid)
        ]
        injected = time.time()
        tree = ctx.stack.kill_worker_main(worker)
        ctx.log(f"  killed worker {tree[0]} (and children {tree[1:]}) during {call.event_id}")
        _cut_off(ctx, call, res)
        ctx.stack.start_worker()
        res.injected += 1
        res.recoveries.append(ctx.recovery(injected, time.time()))
    return res


def second_scheduler(ctx: Ctx, hold: float = 8.0) -> FaultResult:
    """Start a second scheduler beside the first; it must stay a standby; stop it."""
    res = FaultResult("second scheduler")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**ctx.stack.stack.env, "SCHEDULER_PORT": str(port)}
    second = Service("carousel-scheduler", env, ctx.stack.logs).start()
    ctx.stack.stack.services.append(second)
    injected = time.time()
    res.injected = 1
    wait_until(lambda: ctx.stack.stats(url)["active"] is False, 60, what="second is a standby")
    time.sleep(hold)  # the fault's duration
    second_stats = ctx.stack.stats(url)
    if second_stats["active"] or second_stats["dispatched_total"]:
        res.note = f"the second scheduler dispatched: {second_stats}"
    if not ctx.stack.stats()["active"]:
        res.note += " the first scheduler lost the lease"
    second.stop()
    res.recoveries.append(ctx.recovery(injected, time.time()))
    return res


def broker_restart(ctx: Ctx, times: int = 2) -> FaultResult:
    """Stop the private RabbitMQ node gracefully and start it again (same data)."""
    res = FaultResult("broker graceful restart")
    for _ in range(times):
        injected = time.time()
        ctx.stack.broker.stop()
        ctx.stack.broker.start()
        res.injected += 1
        res.recoveries.append(ctx.recovery(injected, time.time(), accept=True))
        time.sleep(ctx.rng.uniform(1.0, 3.0))  # pacing: under load again before the next
    return res


def broker_kill(ctx: Ctx, times: int = 2, down: float = 3.0) -> FaultResult:
    """kill -9 the private RabbitMQ node, keep it down ``down`` s, start it again."""
    res = FaultResult("broker kill -9")
    for _ in range(times):
        injected = time.time()
        ctx.stack.broker.kill()
        time.sleep(down)  # the fault's duration
        ctx.stack.broker.start()
        res.injected += 1
        res.recoveries.append(ctx.recovery(injected, time.time(), accept=True))
        time.sleep(ctx.rng.uniform(1.0, 3.0))  # pacing
    return res


def elasticity_cutoff(ctx: Ctx) -> FaultResult:
    return FaultResult(
        "elasticity observer cut off",
        note="skipped: the fault stack runs its workers directly, not through "
        "carousel-elasticity, so there is no observer to cut off",
        skipped=True,
    )
