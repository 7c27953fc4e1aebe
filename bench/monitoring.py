"""Monitoring at each size of cloud (up to 100,000 VMs: 5,000 hosts x 20): how fast a
change on the cloud becomes a queued event (detection latency, injected ``vm_down`` →
the heal's row ``queued`` in the ledger), following simcloud's change stream and
polling alone; what the first list costs (the sync: every VM listed, diffed and
written); what a relist that finds nothing costs (producer and simcloud CPU seconds,
repository rows written per relist); and the peak memory (RSS) of the producer and of
simcloud. simcloud and the producer are real processes; nothing dispatches meanwhile."""

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


#: the sizes measured (VMs); the largest is the one the goals judge
SIZES = (2_000, 20_000, 100_000)


def run(sizes: tuple[int, ...] = SIZES, injections: int = 30) -> None:
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
        "The first list, a relist with no change: seconds, CPU, rows written, peak RSS",
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


def _started(stack: Any, vms: int) -> float:
    """Start simcloud with ``vms`` VMs, then the producer; the seconds from the producer
    ready to every VM listed (the first list: fetched, diffed, written)."""
    stack.simcloud("--hosts", str(vms // VMS_PER_HOST), "--vms-per-host", str(VMS_PER_HOST))
    stack.producer()
    ready = time.perf_counter()
    wait_until(lambda: _status(stack)["vms"] == vms, 300, what=f"{vms} VMs listed")
    return time.perf_counter() - ready


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
        synced = _started(stack, vms)
        cloud, producer = (svc.proc for svc in stack.services)
        assert cloud is not None and producer is not None
        # the first list's own figures (the next relist is a resync interval later)
        wait_until(lambda: _relists(stack) >= 1, 60, what="the first list counted")
        first = _metrics(stack)
        assert first["lists"] == 1, "the first relist came before the first list was read"
        wait_until(lambda: _relists(stack) > 1, 60, what="a relist")
        before, cpu0, cloud0 = _metrics(stack), _cpu(producer.pid), _cpu(cloud.pid)
        wait_until(lambda: _relists(stack) >= before["lists"] + relists, 300, what="relists")
        after, cpu1, cloud1 = _metrics(stack), _cpu(producer.pid), _cpu(cloud.pid)
        n = after["lists"] - before["lists"]
        assert _events(store) == 0
        peak = {"producer": _peak_rss(producer.pid), "simcloud": _peak_rss(cloud.pid)}
    return {
        "vms": vms,
        "listed after s": synced,
        "first list s": first["seconds"],
        "first list rows": int(first["rows"]),
        "relists": int(n),
        "relist s": (after["seconds"] - before["seconds"]) / n,
        "producer cpu s/relist": (cpu1 - cpu0) / n,
        "simcloud cpu s/relist": (cloud1 - cloud0) / n,
        "rows written/relist": (after["rows"] - before["rows"]) / n,
        "events": 0,
        "producer peak MB": peak["producer"],
        "simcloud peak MB": peak["simcloud"],
    }


def _status(stack: Any) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.producer_url}/monitor/status").json()["sources"][0])


def _metrics(stack: Any) -> dict[str, float]:
    """The producer's monitoring figures, read at one moment: lists made (the first and
    the relists), their seconds, and the repository rows written."""
    wanted = {
        "carousel_monitor_relist_seconds_count": "lists",
        "carousel_monitor_relist_seconds_sum": "seconds",
        "carousel_monitor_rows_written_total": "rows",
    }
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in httpx.get(f"{stack.producer_url}/metrics").text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            out[wanted[name]] = float(line.rsplit(" ", 1)[1])
    return out


def _relists(stack: Any) -> float:
    return _metrics(stack)["lists"]


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss(pid: int) -> float:
    """The process's peak resident memory so far, in MB (Linux /proc: VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


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
