"""A fault of the workers' clocks: every action run by workers whose wall clocks are a
minute off, one behind and one ahead (:mod:`harness.skewclock`, as
``tests/integration/test_clock_skew.py`` does).

They start beside the stack's workers, which then warm-stop, so every action of the
phase — the steady load's, and a few of the fault's own that hold several claim leases
at the receiver, so their claims are renewed many times while the sweeper looks for
expired ones — is claimed, renewed and finished by a skewed clock. Every lease is
stamped and judged by the ledger's clock (``shared/clock.py``): had a process used its
own, the slow worker's claims would look expired to the dispatcher's sweeper as soon as
made — the machines profile sweeps every second and sends a task again once it has
waited a few seconds — be taken over by the fast worker, and their actions run twice, at
once, on one VM (a duplicate or a per-VM violation in the accounting). A takeover the
accounting would not count — the holder stops its action when it learns its claim is
gone (its call *abandoned*), or a stale call is refused (*fenced*), and the action runs
again — the fault counts itself, as a violation: nothing in this phase kills a worker,
so no action of it should be cut off. Then the stack's workers start again and the
skewed ones warm-stop.
"""

from __future__ import annotations

import time

from harness import skewclock
from harness.faults.accounting import VIOLATION, Anomaly, wait_final
from harness.faults.base import Ctx, FaultResult
from harness.processes import Service
from harness.recorder import ABANDONED, FENCED

#: how far each skewed worker's wall clock is off, in seconds
SKEW = 60.0
#: the skewed workers' claim lease, and how long the fault's own actions hold: several
#: leases, so each claim is renewed a few times
LEASE = 3.0
HOLD = 3 * LEASE
#: the fault's actions: two per key, the second posted once the first got its 202
HELD_KEYS = [("h0", "vm0", "p0"), ("h1", "vm1", "p1"), ("h2", "vm2", "p0")]
#: how far a skewed clock may be from the intended offset (a subprocess's start-up)
TOLERANCE = 10.0


def clock_skew(ctx: Ctx) -> FaultResult:
    stack = ctx.stack
    res = FaultResult("workers' clocks off")
    library = skewclock.build(stack.base)
    envs = {"slow": skewclock.skewed(library, -SKEW), "fast": skewclock.skewed(library, SKEW)}
    offsets = {kind: skewclock.offset(env) for kind, env in envs.items()}
    for kind, off in offsets.items():
        want = SKEW if kind == "fast" else -SKEW
        if abs(off - want) > TOLERANCE:
            raise RuntimeError(f"the {kind} clock is {off:+.1f} s off, not {want:+.0f} s")
    lease = {"CLAIM_LEASE_SECONDS": str(LEASE)}
    normal = stack.live_workers()
    skewed: list[Service] = []
    try:
        skewed = stack.start_workers(*[(kind, {**env, **lease}) for kind, env in envs.items()])
        stack.stop_workers(normal)  # every action now goes to a skewed worker
        injected = time.time()
        res.injected = 1
        clocks = ", ".join(f"{kind} {off:+.1f} s" for kind, off in offsets.items())
        ctx.log(f"  every action now on the skewed workers (clocks {clocks})")
        ids: list[str] = []
        for _ in range(2):
            for key in HELD_KEYS:
                ids += ctx.load.post(ctx.load.make(1, {"hold": HOLD}, key=key), "skew-hold")
        views = wait_final(stack, ids, 4 * HOLD + 60)
        runs = {i: ((v or {}).get("attempts"), (v or {}).get("worker")) for i, v in views.items()}
        ran_by = sorted({str(w).split("@")[0] for _, w in runs.values()})
        ctx.log(f"  the held actions (attempts, worker): {runs}")
    finally:  # the stack's workers back, then the skewed ones warm-stop
        live = stack.live_workers()
        stack.start_workers(*[("w", {})] * (stack.profile.workers - sum(w in live for w in normal)))
        stack.stop_workers(skewed)
    restored = time.time()
    res.recoveries.append(ctx.recovery(injected, restored))
    cut_off = [
        c
        for c in stack.receiver.calls()
        if injected <= c.started <= restored and c.outcome in (ABANDONED, FENCED)
    ]
    res.anomalies += [
        Anomaly(
            VIOLATION,
            c.event_id,
            c.started,
            f"its call (token {c.token}) ended {c.outcome} while no worker was killed: "
            "its claim was taken over from a live holder",
        )
        for c in cut_off
    ]
    retried = {i: a for i, (a, _) in runs.items() if a != 1}
    res.note = f"held actions ran by {ran_by}; attempts other than 1: {retried or 'none'}"
    return res
