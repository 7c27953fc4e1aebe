"""Faults of the ledger: the shared SQLite file locked by the harness.

``BEGIN EXCLUSIVE`` on the ledger file from the harness process: in WAL mode readers go
on, every writer waits (the services' busy timeout is 30 s). Held 20 s, the services
should only stall; held 40 s, their writes fail with "database is locked" and must be
retried, not dropped. Just before the lock, a few actions that hold 1 s at the receiver
are started, so some action is sure to finish while the ledger cannot record it.

SQLite only: on PostgreSQL the fault is skipped. Its nearest equivalent there, a table
lock, tests nothing the busy timeout does — PostgreSQL waits for a lock without end (the
services set no ``lock_timeout``), so no write fails and must be retried — and the
failure that matters across machines is the ledger out of reach.
"""

from __future__ import annotations

import sqlite3
import time

from harness.faults.base import Ctx, FaultResult
from harness.processes import wait_until

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
