"""Faults that kill, restart or add processes: producer, dispatcher, workers, broker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from concurrent.futures import wait

import httpx

from harness.faults import pids
from harness.faults.base import Ctx, FaultResult
from harness.faults.proxy import CuttableProxy
from harness.faults.stack import FaultStack
from harness.processes import BIN, Service, free_port, wait_until
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


def dispatcher_kill(ctx: Ctx, times: int = 3) -> FaultResult:
    """kill -9 the dispatcher at a random moment after a burst (so it is likely between
    consuming and dispatching, or publishing and acking), then start it again."""
    res = FaultResult("dispatcher kill -9")
    for _ in range(times):
        ctx.load.post_async(ctx.load.make(20))
        time.sleep(ctx.rng.uniform(0.0, 1.0))
        injected = time.time()
        assert ctx.stack.dispatcher is not None
        ctx.stack.dispatcher.kill()
        ctx.stack.restart_dispatcher()
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


def second_dispatcher(ctx: Ctx, hold: float = 8.0) -> FaultResult:
    """Start a second dispatcher beside the first; it must stay a standby; stop it."""
    res = FaultResult("second dispatcher")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**ctx.stack.stack.env, "DISPATCHER_PORT": str(port)}
    second = Service("carousel-dispatcher", env, ctx.stack.logs).start()
    ctx.stack.stack.services.append(second)
    injected = time.time()
    res.injected = 1
    wait_until(lambda: ctx.stack.stats(url)["active"] is False, 60, what="second is a standby")
    time.sleep(hold)  # the fault's duration
    second_stats = ctx.stack.stats(url)
    if second_stats["active"] or second_stats["dispatched_total"]:
        res.note = f"the second dispatcher dispatched: {second_stats}"
    if not ctx.stack.stats()["active"]:
        res.note += " the first dispatcher lost the lease"
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


#: how long the elasticity worker is cut off from the broker
CUTOFF = 30.0
#: how long the held actions put on the elastic workers hold at the receiver
CUTOFF_HOLD = 2.0
#: after the cut, how long the elasticity worker is watched judging heartbeats again
#: (past its ELASTICITY_HEARTBEAT_TIMEOUT of 10 s, counted from its stream coming back)
AFTER_CUT = 20.0
#: elasticity log kinds (Engine._note) that are a worker killed: ``lost`` and ``slacker``
KILL_KINDS = ("] lost: ", "] slacker: ")


def elasticity_cutoff(ctx: Ctx, cut: float = CUTOFF) -> FaultResult:
    """Run ``carousel-elasticity`` (local provider, profile ``default``: 1-2 workers)
    with its broker connection through a loopback proxy, and the stack's own workers
    warm-stopped so the elastic workers run every action; while they are busy with held
    actions, cut the proxy (every connection of the elasticity worker closed, new ones
    refused) for ``cut`` s, restore it, and watch past its heartbeat timeout. Its
    workers keep their direct connection: they stay busy and alive, so the elasticity
    worker must kill none of them — no ``lost``/``slacker`` kill in its log, and no call
    abandoned during the phase. Then the stack's workers come back and elasticity stops
    (its workers warm-stop with it)."""
    res = FaultResult("elasticity observer cut off")
    began = time.time()
    stack = ctx.stack
    proxy = CuttableProxy(("127.0.0.1", stack.broker.port))
    direct = stack.broker.url
    via_proxy = direct.replace(f"127.0.0.1:{stack.broker.port}", proxy.address)
    assert via_proxy != direct
    elasticity: Service | None = None
    holding = threading.Event()
    feeder: threading.Thread | None = None
    try:
        # the stack's workers leave (warm: they finish what they run), so the actions go
        # to the workers the elasticity worker manages
        stack.stop_workers(stack.live_workers())
        elasticity = stack.stack.elasticity(
            AMQP_URL=via_proxy,
            # its workers connect to the broker directly: only the observer is cut off
            WORKER_COMMAND=f"env AMQP_URL={direct} {BIN / 'carousel-worker'}",
            WORKER_LOG_DIR=str(stack.logs),
            ELASTICITY_PROFILES=json.dumps(
                {"default": {"min_workers": 1, "max_workers": 2, "concurrency": 2}}
            ),
            ELASTICITY_INTERVAL="1",
        )
        ctx.log(
            f"  elasticity up (pid {elasticity.proc.pid if elasticity.proc else '?'}), "
            f"broker through proxy {proxy.address}"
        )

        def feed() -> None:  # held actions, so the elastic workers are busy throughout
            while holding.is_set():
                ctx.load.post_async(ctx.load.make(3, {"hold": CUTOFF_HOLD}), "elastic-hold")
                time.sleep(CUTOFF_HOLD)

        holding.set()
        feeder = threading.Thread(target=feed, name="elastic-hold", daemon=True)
        feeder.start()
        assert elasticity.proc is not None
        root = elasticity.proc.pid

        def elastic_busy() -> int:
            return sum(
                pids.caller_pid(c.client_port, stack.receiver.port, [root]) not in (None, root)
                for c in stack.receiver.open_calls()
            )

        wait_until(elastic_busy, 60, 0.1, what="an elastic worker busy with an action")
        before = _elastic_workers(root)
        injected = time.time()
        closed = proxy.cut()
        res.injected = 1
        ctx.log(
            f"  cut: {closed} elasticity connection(s) closed; elastic workers {before}, "
            f"{elastic_busy()} action(s) running on them"
        )
        busy_samples = []
        views = [f"before: {_view(stack)}"]
        while time.time() - injected < cut:
            time.sleep(2.0)
            busy_samples.append(elastic_busy())
            if len(busy_samples) % 5 == 0:
                views.append(f"cut+{time.time() - injected:.0f}s: {_view(stack)}")
        proxy.restore()
        restored = time.time()
        ctx.log(
            f"  restored after {restored - injected:.1f} s; elastic actions running "
            f"during the cut (sampled every 2 s): {busy_samples}"
        )
        res.recoveries.append(ctx.recovery(injected, restored))
        wait_until(lambda: proxy.connections() > 0, 30, what="elasticity reconnected")
        for _ in range(2):
            time.sleep(AFTER_CUT / 2)  # the elasticity worker judges heartbeats again
            views.append(f"restored+{time.time() - restored:.0f}s: {_view(stack)}")
        ctx.log("  its own view (/status): " + "; ".join(views))
        holding.clear()
        feeder.join(10)
        after = _elastic_workers(root)
        gone = sorted(set(before) - set(after))
        text = elasticity.log_path.read_text(errors="replace")
        kills = [ln for ln in text.splitlines() if any(k in ln for k in KILL_KINDS)]
        stopping = time.time()
        abandoned = [
            c
            for c in stack.receiver.calls()
            if c.outcome == ABANDONED and began <= c.started < stopping
        ]
        if kills:
            res.note += f" ELASTICITY KILLED {len(kills)}: {kills[:3]};"
        if abandoned:
            res.note += f" {len(abandoned)} call(s) abandoned: {[c.event_id for c in abandoned]};"
        if gone:
            res.note += f" elastic worker pid(s) {gone} gone;"
        if not (kills or abandoned or gone):
            res.note += (
                f" no kill, no call abandoned; busy during cut {max(busy_samples, default=0)}"
            )
        ctx.log(f"  elastic workers before {before}, after {after}; kills {kills}")
    finally:
        holding.clear()
        if feeder is not None:
            feeder.join(10)
        # the stack's workers come back, then elasticity stops (its workers warm-stop)
        stack.start_workers(*[("w", {})] * stack.profile.workers)
        if elasticity is not None:
            root_pid = elasticity.proc.pid if elasticity.proc is not None else None
            tree = pids.descendants(root_pid)[1:] if root_pid is not None else []
            elasticity.stop()
            wait_until(lambda: not any(_alive(p) for p in tree), 60, what="elastic workers gone")
        proxy.close()
    return res


def _view(stack: FaultStack) -> str:
    """The elasticity worker's view of profile ``default`` from its /status: workers by
    state, and how long ago its last decision was taken (its control loop goes on)."""
    try:
        body = httpx.get(f"{stack.stack.elasticity_url}/status", timeout=5).json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"no /status ({exc!r})"
    default = body["profiles"]["default"]
    counts = {k: v for k, v in default["counts"].items() if v}
    decisions = default["decisions"]
    age = f"{time.time() - decisions[-1]['at']:.1f}s ago" if decisions else "none"
    return f"{counts} backlog {default['backlog']}, last decision {age}"


def _elastic_workers(root: int) -> list[int]:
    """The elastic workers' main processes: the elasticity worker's children (of any of
    its threads: the control loop spawns them)."""
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for task in (pids.PROC / str(root) / "task").iterdir():
            with contextlib.suppress(OSError):
                out.update(int(c) for c in (task / "children").read_text().split())
    return sorted(out)


def _alive(pid: int) -> bool:
    try:
        state = (pids.PROC / str(pid) / "stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return state != "Z"
