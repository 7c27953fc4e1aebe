"""The cloud source restarted under the monitoring: a simcloud process watched by the
producer (``MONITOR_SOURCE=simcloud`` for this phase), a host and a VM fault before and
after simcloud is restarted as a fresh process (its versions start again)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx

from harness.faults.accounting import STUCK, Anomaly
from harness.faults.base import Ctx, FaultResult
from harness.processes import Service, free_port, wait_until

#: simcloud's size: hosts h1..h3 (the load's hosts are h0..h3), 3 VMs each
SIMCLOUD_ARGS = ["--hosts", "3", "--vms-per-host", "3", "--action-seconds", "0.3"]
POLICIES = """policies:
  - {name: auto-heal, kind: auto_heal, debounce: 0.5}
  - {name: host-maintenance, kind: host_maintenance, action: live_migrate}
"""
#: how long a fault waits for the monitoring's events
RAISE_BOUND = 60.0


def cloud_restart(ctx: Ctx) -> FaultResult:
    """Host maintenance on h1 and a VM down; simcloud restarted; the same again. Every
    fault must raise its events (the monitoring's events are accounted like the load's:
    final, run once); one that raised none within :data:`RAISE_BOUND` is ``stuck``."""
    res = FaultResult("cloud source restarted")
    fs = ctx.stack
    env = fs.stack.env
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    policies = fs.base / "cloud-restart-policies.yaml"
    policies.write_text(POLICIES)
    env["SIMCLOUD_PORT"] = str(port)
    simcloud: Service | None = fs.stack.simcloud(*SIMCLOUD_ARGS)
    monitoring = {
        "MONITOR_SOURCE": "simcloud",
        "SIMCLOUD_URL": url,
        "MONITOR_RESYNC_INTERVAL": "5",
        "POLICIES_FILE": str(policies),
    }
    try:
        _restart_producer(ctx, **monitoring)
        for round_ in (1, 2):
            if round_ == 2:
                assert simcloud is not None
                simcloud.stop()
                injected = time.time()
                simcloud = fs.stack.simcloud(*SIMCLOUD_ARGS)
                res.injected += 1
                res.recoveries.append(ctx.recovery(injected, time.time()))
            for kind, target, policy, n in (
                ("host_maintenance", {"host": "h1"}, "host-maintenance", 3),
                ("vm_down", {"vm": f"h2-vm{round_}"}, "auto-heal", 1),
            ):
                before = set(_raised(ctx, policy))
                at = time.time()
                r = httpx.post(f"{url}/v1/faults", json={"kind": kind, **target}, timeout=10)
                r.raise_for_status()
                new = _wait_raised(ctx, policy, before, n)
                ctx.log(f"  round {round_}: {kind} {target}: {len(new)} {policy} event(s)")
                if len(new) < n:
                    res.anomalies.append(
                        Anomaly(
                            STUCK,
                            f"{kind}-{round_}",
                            at,
                            f"{kind} {target} raised {len(new)} of {n} events "
                            f"{'after' if round_ == 2 else 'before'} simcloud restarted",
                        )
                    )
        seen = _monitor_status(fs.stack.producer_url).get("source_restarts")
        res.note = f"{len(res.anomalies)} fault(s) without their events; restarts seen {seen}"
    finally:
        _restart_producer(ctx, MONITOR_SOURCE="")
        if simcloud is not None:
            simcloud.stop()
    return res


def _wait_raised(ctx: Ctx, policy: str, before: set[str], n: int) -> list[str]:
    """The events of ``policy`` raised since ``before``, once ``n`` are or at the bound."""
    with contextlib.suppress(AssertionError):
        wait_until(
            lambda: len(set(_raised(ctx, policy)) - before) >= n,
            RAISE_BOUND,
            0.2,
            what=f"{policy} events",
        )
    return sorted(set(_raised(ctx, policy)) - before)


def _restart_producer(ctx: Ctx, **extra: str) -> None:
    fs = ctx.stack
    if fs.producer is not None:
        fs.producer.stop()
    fs.producer = fs.stack.producer(**extra)


def _raised(ctx: Ctx, policy: str) -> list[str]:
    """The monitoring's events of ``policy`` in the ledger, adopted by the load so the
    accounting covers them (final, run once, no phantom call)."""
    rows = ctx.stack.ledger.rows(
        "SELECT id, host, vm, policy, accepted_at FROM events "
        "WHERE id LIKE 'mon-%' AND policy = :policy",
        policy=policy,
    )
    ctx.load.adopt(rows, "monitoring")
    return [r[0] for r in rows]


def _monitor_status(producer_url: str) -> dict[str, Any]:
    try:
        sources = httpx.get(f"{producer_url}/monitor/status", timeout=5).json()["sources"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return {"error": repr(exc)}
    return dict(sources[0]) if sources else {}
