"""The scheduler with many live per-key queues: its memory and the time from its start
to holding the head of every queue (declares and consumes pipelined)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import carousel, post_all, wait_for
from bench.report import save


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(keys: int = 20_000) -> None:
    rows: list[dict[str, Any]] = []
    with carousel(START_PAUSED="true") as (stack, _store):
        stack.producer()
        events = [
            {"host": f"h{i % 200}", "vm": f"vm{i}", "policy": "p", "action": "heal"}
            for i in range(keys)
        ]
        created = post_all(
            stack.producer_url, [events[i : i + 500] for i in range(0, keys, 500)], clients=2
        )
        started = time.perf_counter()
        svc = stack.scheduler()
        ready = time.perf_counter() - started
        assert svc.proc is not None
        wait_for(
            lambda: httpx.get(f"{stack.scheduler_url}/stats").json()["held"] == keys,
            900,
            "every head held",
        )
        holding = time.perf_counter() - started
        rows.append(
            {
                "live queues": keys,
                "producer: keys created s": created,
                "scheduler: start to ready s": ready,
                "scheduler: start to every head held s": holding,
                "scheduler RSS MB": rss_mb(svc.proc.pid),
            }
        )
    save("scale", f"Scheduler with {keys:,} live per-key queues (paused, heads held)", rows)


if __name__ == "__main__":
    run()
