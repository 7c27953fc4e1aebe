"""The dispatcher with many live per-key queues: its memory and the time from its start
to holding the head of every queue (declares and consumes pipelined)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import kombu

from bench.common import AMQP_URL, broker_cpu, carousel, declare_queues, post_all, wait_for
from bench.report import save


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def declare_only(n: int) -> float:
    """Seconds the broker takes to declare ``n`` durable queues for one client that
    does nothing else (pipelined, as the producer declares): the floor of creating keys."""
    names = [f"declare-{uuid.uuid4().hex[:8]}.{i}" for i in range(n)]
    with kombu.Connection(AMQP_URL) as conn:
        channel = conn.channel()
        started = time.perf_counter()
        declare_queues(channel, names)
        took = time.perf_counter() - started
        for name in names[:-1]:
            channel.queue_delete(name, nowait=True)
        channel.queue_delete(names[-1])
    return took


def run(keys: int = 20_000) -> None:
    rows: list[dict[str, Any]] = []
    alone = declare_only(keys)  # before any of Carousel's runs on the broker
    with carousel(START_PAUSED="true") as (stack, _store):
        stack.producer()
        events = [
            {"host": f"h{i % 200}", "vm": f"vm{i}", "policy": "p", "action": "heal"}
            for i in range(keys)
        ]
        cpu = broker_cpu()
        created = post_all(
            stack.producer_url, [events[i : i + 500] for i in range(0, keys, 500)], clients=2
        )
        cpu = broker_cpu() - cpu
        started = time.perf_counter()
        svc = stack.dispatcher()
        ready = time.perf_counter() - started
        assert svc.proc is not None
        wait_for(
            lambda: httpx.get(f"{stack.dispatcher_url}/stats").json()["held"] == keys,
            900,
            "every head held",
        )
        holding = time.perf_counter() - started
        rows.append(
            {
                "live queues": keys,
                "producer: keys created s": created,
                "broker cores meanwhile": cpu / created,
                "broker alone: as many queues declared s": alone,
                "dispatcher: start to ready s": ready,
                "dispatcher: start to every head held s": holding,
                "dispatcher RSS MB": rss_mb(svc.proc.pid),
            }
        )
    save("scale", f"Dispatcher with {keys:,} live per-key queues (paused, heads held)", rows)


if __name__ == "__main__":
    run()
