"""Faults of the ledger: the shared SQLite file locked by the harness, and the active
dispatcher cut off from a PostgreSQL ledger (``ledger-cut``, see :func:`ledger_cut`).

``BEGIN EXCLUSIVE`` on the ledger file from the harness process: in WAL mode readers go
on, every writer waits (the services' busy timeout is 30 s). Held 20 s, the services
should only stall; held 40 s, their writes fail with "database is locked" and must be
retried, not dropped. Just before the lock, a few actions that hold 1 s at the receiver
are started, so some action is sure to finish while the ledger cannot record it.

SQLite only: on PostgreSQL the fault is skipped. Its nearest equivalent there, a table
lock, tests nothing the busy timeout does — PostgreSQL waits for a lock without end (the
services set no ``lock_timeout``), so no write fails and must be retried — and the
failure that matters across machines, the ledger out of reach, is ``ledger-cut``'s.
"""

from __future__ import annotations

import sqlite3
import time

from harness.faults.base import Ctx, FaultResult
from harness.processes import Service, free_port, wait_until

#: actions in progress when the lock is taken, and how long each holds at the receiver
IN_PROGRESS, HOLD = 3, 1.0


def ledger_lock(ctx: Ctx, seconds: float = 20.0) -> FaultResult:
    res = FaultResult(f"ledger locked {seconds:.0f} s")
    path = ctx.stack.ledger.sqlite_path
    if path is None:
        res.skipped = True
        res.note = "SQLite only: a PostgreSQL ledger has no file lock and no busy timeout"
        return res
    ids = set(ctx.load.post(ctx.load.make(IN_PROGRESS, {"hold": HOLD}), "load"))
    wait_until(
        lambda: any(c.event_id in ids for c in ctx.stack.receiver.open_calls()),
        60,
        0.01,
        what="an action in progress before the lock",
    )
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        injected = time.time()
        ctx.log(f"  ledger locked (BEGIN EXCLUSIVE) for {seconds:.0f} s")
        time.sleep(seconds)  # the fault's duration
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    res.injected = 1
    res.recoveries.append(ctx.recovery(injected, time.time()))
    return res


def ledger_lock_long(ctx: Ctx) -> FaultResult:
    return ledger_lock(ctx, 40.0)


# -- the active dispatcher cut off from a PostgreSQL ledger --------------------------
#: the VM of this fault's own events: one long action, the key's next events behind it
CUT_KEYS = [("hc", "vmc", "pc0"), ("hc", "vmc", "pc1")]
#: how long the first action holds at the receiver (it runs through the cut), and the rest
CUT_FIRST_HOLD, CUT_HOLD = 8.0, 0.3
#: how long the proxy stays cut once the standby took over: it works under the load
CUT_AFTER_TAKEOVER = 10.0
#: the dispatcher's log line when its lease watch gives up its session
GAVE_UP = "giving up the session"


def ledger_cut(ctx: Ctx) -> FaultResult:
    """A standby dispatcher beside the active one, which reaches PostgreSQL through the
    ledger's proxy; while the active one holds heads (one action of this fault's VM runs
    long, the VM's next events wait behind it), the proxy is cut. The active one must
    give its heads back to their queues (its lease watch ends its broker session) before
    the standby takes the expired dispatcher lease and dispatches them — each key's
    order is the accounting's to check. The proxy stays cut a while, is restored, and
    the standby is stopped: the first dispatcher takes the lease back."""
    stack = ctx.stack
    res = FaultResult("dispatcher cut off from the ledger")
    proxy = stack.ledger.proxy
    if proxy is None or stack.dispatcher is None:
        res.skipped = True
        res.note = "PostgreSQL only: a SQLite ledger is a file on the dispatcher's machine"
        return res
    port = free_port()
    standby_url = f"http://127.0.0.1:{port}"
    standby = Service(
        "carousel-dispatcher", {**stack.stack.env, "DISPATCHER_PORT": str(port)}, stack.logs
    ).start()
    stack.stack.services.append(standby)
    try:
        wait_until(lambda: stack.stats(standby_url)["active"] is False, 60, what="a standby")
        ids = _post_behind_a_long_action(ctx)
        wait_until(
            lambda: (
                any(c.event_id == ids[0] for c in stack.receiver.open_calls())
                and stack.stats()["held"] > 0
            ),
            60,
            0.05,
            what=f"the action of {ids[0]} running, heads held",
        )
        held = stack.stats()["held"]
        log_before = stack.dispatcher.log_path.stat().st_size
        injected = time.time()
        closed = proxy.cut()
        res.injected = 1
        ctx.log(f"  proxy cut ({closed} connection(s)) while {held} head(s) held")
        wait_until(lambda: stack.stats(standby_url)["active"], 60, what="the standby took over")
        ctx.log(f"  the standby took over after {time.time() - injected:.1f} s")
        res.recoveries.append(ctx.recovery(injected, injected))
        time.sleep(CUT_AFTER_TAKEOVER)  # the fault's duration
        proxy.restore()
        wait_until(lambda: proxy.connections() > 0, 60, what="the first dispatcher reconnected")
        dispatched = stack.stats(standby_url)["dispatched_total"]
        standby.stop()  # it releases the lease: the first takes it back
        handed_back = time.time()
        wait_until(lambda: stack.stats()["active"], 60, what="the first dispatcher active again")
        back = ctx.recovery(handed_back, handed_back)
        if back is None:
            res.recoveries.append(None)
        with stack.dispatcher.log_path.open("rb") as log:
            log.seek(log_before)
            gave_up = GAVE_UP.encode() in log.read()
        res.note = (
            f"standby dispatched {dispatched}; the first gave its session up: "
            f"{'yes' if gave_up else 'NO'}; back to the first in "
            f"{'-' if back is None else f'{back:.1f}'} s"
        )
    finally:
        proxy.restore()
        standby.stop()
    return res


def _post_behind_a_long_action(ctx: Ctx) -> list[str]:
    """One long action on the fault's VM, then two more events per key of it, each
    posted once the previous one got its 202 (so each key's order is defined)."""
    first = ctx.load.post(ctx.load.make(1, {"hold": CUT_FIRST_HOLD}, key=CUT_KEYS[0]), "cut")
    rest = []
    for _ in range(2):
        for key in CUT_KEYS:
            rest += ctx.load.post(ctx.load.make(1, {"hold": CUT_HOLD}, key=key), "cut")
    return first + rest
