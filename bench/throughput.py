"""End-to-end throughput: Carousel (REST -> queues -> round-robin -> Celery) against raw
Celery publishing and executing the same number of no-op tasks, same broker, same pool
and worker count, in the same run.

Two yardsticks: *bare* Celery (tasks acked on receipt, no task events) and Celery as its
users run it under Flower (task events on, late acks). Carousel always runs with both
(Flower's view, and an ack only once the outcome is recorded). ``THROUGHPUT_POOLS``
(default ``prefork``; e.g. ``prefork,threads``) picks the worker pools compared.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from bench.common import (
    broker_cpu,
    carousel,
    count_status,
    on_ledger,
    post_all,
    raw_celery_worker,
    wait_for,
)
from bench.report import save

FLAVOURS = {"bare": "bare Celery", "flower": "Celery under Flower"}


def carousel_rate(n: int, concurrency: int, pool: str = "prefork") -> dict[str, Any]:
    vms = 500
    events = [
        {"host": f"h{i % 50}", "vm": f"vm{i % vms}", "policy": "p", "action": "heal"}
        for i in range(n)
    ]
    batches = [events[i : i + 500] for i in range(0, n, 500)]
    with carousel(MAX_PARALLEL=64, WORKER_CONCURRENCY=concurrency, WORKER_POOL=pool) as (
        stack,
        store,
    ):
        stack.producer()
        stack.dispatcher()
        stack.worker()
        cpu, started = broker_cpu(), time.perf_counter()
        ingest = post_all(stack.producer_url, batches)
        wait_for(lambda: count_status(store, "succeeded") == n, 600, "all events succeeded")
        took = time.perf_counter() - started
        cpu = broker_cpu() - cpu
    return {
        "system": "carousel",
        "events": n,
        "workers": f"1 x {pool} {concurrency}",
        "seconds": took,
        "per second": n / took,
        "ingest s": ingest,
        "broker CPU ms/event": cpu * 1000 / n,
    }


def raw_rate(n: int, concurrency: int, flavour: str, pool: str = "prefork") -> dict[str, Any]:
    from bench.raw_celery import app

    queue = f"rawbench-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    with raw_celery_worker(queue, concurrency, flavour=flavour, pool=pool):
        inspect = app.control.inspect(timeout=1)
        wait_for(lambda: bool(inspect.ping()), 60, "raw worker up")
        cpu, started = broker_cpu(), time.perf_counter()
        with app.producer_or_acquire() as producer:
            for i in range(n):
                app.send_task("rawbench.noop", args=[i], queue=queue, producer=producer)
        published = time.perf_counter() - started

        def done() -> bool:
            stats = inspect.stats() or {}
            total = sum(s.get("total", {}).get("rawbench.noop", 0) for s in stats.values())
            return bool(total >= n)

        wait_for(done, 600, "raw tasks executed")
        took = time.perf_counter() - started
        cpu = broker_cpu() - cpu
    return {
        "system": FLAVOURS[flavour],
        "events": n,
        "workers": f"1 x {pool} {concurrency}",
        "seconds": took,
        "per second": n / took,
        "ingest s": published,
        "broker CPU ms/event": cpu * 1000 / n,
    }


def run(n: int = 5000, concurrency: int = 2) -> None:
    pools = os.environ.get("THROUGHPUT_POOLS", "prefork").split(",")
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    for pool in pools:
        yardsticks = [raw_rate(n, concurrency, flavour, pool) for flavour in FLAVOURS]
        ours = carousel_rate(n, concurrency, pool)
        for row in yardsticks:
            ratio = ours["per second"] / row["per second"]
            row["Carousel ÷ this"] = ratio
            ratios[f"{pool}: {row['system']}"] = ratio
        ours["Carousel ÷ this"] = ""
        rows += [*yardsticks, ours]
    summary = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
    save(
        on_ledger("throughput"),
        f"End-to-end throughput, {n} no-op events (Carousel ÷ yardstick: {summary})",
        rows,
        ratios=ratios,
    )


if __name__ == "__main__":
    run()
