"""End-to-end throughput: Carousel (REST -> queues -> round-robin -> Celery) against raw
Celery publishing and executing the same number of no-op tasks, same broker, same pool
and worker count, in the same run."""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.common import (
    carousel,
    count_status,
    post_all,
    raw_celery_worker,
    wait_for,
)
from bench.report import save


def carousel_rate(n: int, concurrency: int) -> dict[str, Any]:
    vms = 500
    events = [
        {"host": f"h{i % 50}", "vm": f"vm{i % vms}", "policy": "p", "action": "heal"}
        for i in range(n)
    ]
    batches = [events[i : i + 500] for i in range(0, n, 500)]
    with carousel(MAX_PARALLEL=64, WORKER_CONCURRENCY=concurrency) as (stack, store):
        stack.producer()
        stack.scheduler()
        stack.worker()
        started = time.perf_counter()
        ingest = post_all(stack.producer_url, batches)
        wait_for(lambda: count_status(store, "succeeded") == n, 600, "all events succeeded")
        took = time.perf_counter() - started
    return {
        "system": "carousel",
        "events": n,
        "workers": f"1 x prefork {concurrency}",
        "seconds": took,
        "per second": n / took,
        "ingest s": ingest,
    }


def raw_rate(n: int, concurrency: int) -> dict[str, Any]:
    from bench.raw_celery import app

    queue = f"rawbench-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    with raw_celery_worker(queue, concurrency):
        inspect = app.control.inspect(timeout=1)
        wait_for(lambda: bool(inspect.ping()), 60, "raw worker up")
        started = time.perf_counter()
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
    return {
        "system": "raw celery",
        "events": n,
        "workers": f"1 x prefork {concurrency}",
        "seconds": took,
        "per second": n / took,
        "ingest s": published,
    }


def run(n: int = 5000, concurrency: int = 2) -> None:
    rows = [raw_rate(n, concurrency), carousel_rate(n, concurrency)]
    ratio = rows[1]["per second"] / rows[0]["per second"]
    save(
        "throughput",
        f"End-to-end throughput, {n} no-op events (Carousel / raw Celery = {ratio:.2f})",
        rows,
        ratio=ratio,
    )


if __name__ == "__main__":
    run()
