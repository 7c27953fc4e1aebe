"""Monitoring: how fast a change on the cloud becomes a queued event (detection latency,
injected ``vm_down`` → the heal's row ``queued`` in the ledger), following simcloud's
change stream and polling alone; and what a relist that finds nothing costs (producer
CPU seconds and repository rows written per relist). simcloud and the producer are real
processes; nothing dispatches meanwhile."""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.common import carousel
from bench.report import save
from harness.processes import free_port, wait_until
from shared.store import Store, events

POLICIES = "policies:\n  - {name: auto-heal, kind: auto_heal, debounce: 0}\n"
VMS_PER_HOST = 20
POLL_INTERVAL = 2.0


def run(sizes: tuple[int, ...] = (2_000, 20_000), injections: int = 30) -> None:
    rows: list[dict[str, Any]] = []
    for vms in sizes:
        rows.append(_latency(vms, stream=True, injections=injections))
        rows.append(_latency(vms, stream=False, injections=max(10, injections // 3)))
    save(
        "monitoring_latency",
        "Detection latency: vm_down on simcloud -> heal queued (debounce 0)",
        rows,
    )
    save(
        "monitoring_relist",
        "A relist with no change: producer CPU and rows written per relist",
        [_relist_cost(vms) for vms in sizes],
    )


def _stack_env(**extra: Any) -> dict[str, Any]:
    policies = Path(tempfile.mkdtemp(prefix="carousel-bench-")) / "policies.yaml"
    policies.write_text(POLICIES)
    port = free_port()
    return {
        "MONITOR_SOURCE": "simcloud",
        "POLICIES_FILE": str(policies),
        "SIMCLOUD_PORT": port,
        "SIMCLOUD_URL": f"http://127.0.0.1:{port}",
        "MONITOR_POLL_INTERVAL": POLL_INTERVAL,
        **extra,
    }


def _started(stack: Any, vms: int) -> None:
    stack.simcloud("--hosts", str(vms // VMS_PER_HOST), "--vms-per-host", str(VMS_PER_HOST))
    stack.producer()
    wait_until(lambda: _status(stack)["vms"] == vms, 120, what=f"{vms} VMs listed")


def _latency(vms: int, stream: bool, injections: int) -> dict[str, Any]:
    env = _stack_env(MONITOR_STREAM=str(stream).lower(), MONITOR_RESYNC_INTERVAL=300)
    samples: list[float] = []
    jitter = random.Random(vms)
    with carousel(**env) as (stack, store):
        _started(stack, vms)
        hosts = vms // VMS_PER_HOST
        for i in range(injections):
            name = f"h{1 + i % hosts}-vm{1 + (i // hosts) % VMS_PER_HOST}"
            if not stream:  # at a random point of the poll cycle, not just after a poll
                time.sleep(jitter.uniform(0, POLL_INTERVAL))
            injected = time.time()
            r = httpx.post(
                f"{stack.env['SIMCLOUD_URL']}/v1/faults", json={"kind": "vm_down", "vm": name}
            )
            r.raise_for_status()
            wait_until(partial(_queued, store, name), 60, interval=0.002, what=name)
            samples.append(time.time() - injected)
    samples.sort()
    return {
        "vms": vms,
        "mode": "stream" if stream else f"polling every {POLL_INTERVAL:g} s",
        "changes": len(samples),
        "p50 s": statistics.median(samples),
        "p99 s": samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))],
        "max s": samples[-1],
    }


def _relist_cost(vms: int, relists: int = 5) -> dict[str, Any]:
    env = _stack_env(MONITOR_RESYNC_INTERVAL=2)
    with carousel(**env) as (stack, store):
        _started(stack, vms)
        producer = stack.services[-1]
        assert producer.proc is not None
        first = _relists(stack)
        wait_until(lambda: _relists(stack) > first, 60, what="a relist")
        count0, cpu0, rows0, took0 = (
            _relists(stack),
            _cpu(producer.proc.pid),
            _rows(stack),
            _relist_seconds(stack),
        )
        wait_until(lambda: _relists(stack) >= count0 + relists, 120, what="relists")
        count1, cpu1, rows1, took1 = (
            _relists(stack),
            _cpu(producer.proc.pid),
            _rows(stack),
            _relist_seconds(stack),
        )
        n = count1 - count0
        assert _events(store) == 0
    return {
        "vms": vms,
        "relists": int(n),
        "cpu s/relist": (cpu1 - cpu0) / n,
        "relist s": (took1 - took0) / n,
        "rows written/relist": (rows1 - rows0) / n,
        "events": 0,
    }


def _status(stack: Any) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.producer_url}/monitor/status").json()["sources"][0])


def _metric(stack: Any, prefix: str) -> float:
    for line in httpx.get(f"{stack.producer_url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _relists(stack: Any) -> float:
    return _metric(stack, "carousel_monitor_relist_seconds_count")


def _relist_seconds(stack: Any) -> float:
    return _metric(stack, "carousel_monitor_relist_seconds_sum")


def _rows(stack: Any) -> float:
    return _metric(stack, "carousel_monitor_rows_written_total")


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _queued(store: Store, vm: str) -> bool:
    with store.engine.connect() as conn:
        return (
            conn.execute(
                sa.select(events.c.id).where(events.c.vm == vm, events.c.status == "queued")
            ).first()
            is not None
        )


def _events(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())


if __name__ == "__main__":
    run()
