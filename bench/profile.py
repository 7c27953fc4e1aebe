"""Where the cycles go per event: the throughput scenario with every Carousel process
sampled by py-spy and its CPU time read from /proc.

For each process group (producer, dispatcher, worker parent and children) and for the
broker (the local RabbitMQ's ``beam.smp``) and the load generator (this process), it
reports CPU milliseconds per event, and sorts the sampled stacks of each Carousel
process into a few categories by the lowest frame that belongs to a known library (a
sample in SQLite under SQLAlchemy under Carousel's ledger counts as "ledger (SQL)").
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import broker_cpu, carousel, count_status, post_all, raw_celery_worker, wait_for
from bench.report import save

#: (category, first parts of a frame's file path, as py-spy prints it: relative to its
#: package root): the lowest frame with a known path decides a sample's category
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("ledger (SQL)", ("sqlalchemy/", "sqlite3/", "psycopg/", "psycopg_binary/")),
    ("JSON / validation", ("json/", "pydantic/", "pydantic_core/", "orjson", "msgspec")),
    ("logging", ("logging/",)),
    ("AMQP client", ("kombu/", "amqp/", "aio_pika/", "aiormq/", "pamqp/", "vine/")),
    ("Celery / prefork", ("celery/", "billiard/")),
    ("HTTP server", ("uvicorn/", "starlette/", "fastapi/", "h11/", "httptools/", "anyio/")),
    ("Carousel", ("producer/", "scheduler/", "shared/")),
    ("asyncio / threads", ("asyncio/", "threading.py", "selectors.py", "concurrent/")),
]


def _category(stack: str) -> str:
    for frame in reversed(stack.split(";")):  # leaf first
        path = frame.rpartition(" (")[2]
        for name, starts in CATEGORIES:
            if path.startswith(starts):
                return name
    return "other"


def _group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in process group ``pgid``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ...
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _group_size(pgid: int) -> int:
    """How many live processes are in process group ``pgid``."""
    size = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        size += int(fields[2]) == pgid
    return size


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(n: int = 5000, concurrency: int = 2) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(tempfile.mkdtemp(prefix="carousel-profile-"))
    events = [
        {"host": f"h{i % 50}", "vm": f"vm{i % 500}", "policy": "p", "action": "heal"}
        for i in range(n)
    ]
    batches = [events[i : i + 500] for i in range(0, n, 500)]
    with carousel(MAX_PARALLEL=64, WORKER_CONCURRENCY=concurrency) as (stack, store):
        services = {
            "producer": stack.producer(),
            "dispatcher": stack.dispatcher(),
            "worker": stack.worker(),
        }
        pgids = {name: svc.proc.pid for name, svc in services.items() if svc.proc}
        # sample once the pool's children exist
        wait_for(lambda: _group_size(pgids["worker"]) > concurrency, 60, "worker pool up")
        spies = {
            name: subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--subprocesses",
                    "--nonblocking",
                    "--rate",
                    "100",
                    "--gil",
                    "--format",
                    "raw",
                    "-o",
                    str(out / f"{name}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, pid in pgids.items()
        }
        before = {name: _group_cpu(pgid) for name, pgid in pgids.items()}
        before["broker"], before["load generator"] = broker_cpu(), _self_cpu()
        started = time.perf_counter()
        post_all(stack.producer_url, batches)
        wait_for(lambda: count_status(store, "succeeded") == n, 600, "all events succeeded")
        took = time.perf_counter() - started
        after = {name: _group_cpu(pgid) for name, pgid in pgids.items()}
        after["broker"], after["load generator"] = broker_cpu(), _self_cpu()
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for spy in spies.values():
            spy.wait(30)
    rows: list[dict[str, Any]] = []
    for name in [*pgids, "broker", "load generator"]:
        row: dict[str, Any] = {
            "process": name,
            "CPU ms/event": 1000 * (after[name] - before[name]) / n,
        }
        samples = _samples(out / f"{name}.txt")
        total = sum(samples.values())
        row["where (share of its samples)"] = (
            ", ".join(f"{cat} {100 * count / total:.0f}%" for cat, count in samples.most_common(5))
            if total
            else ""
        )
        rows.append(row)
    rows.append(
        {
            "process": "Carousel, all of the above",
            "CPU ms/event": sum(r["CPU ms/event"] for r in rows),
            "where (share of its samples)": "",
        }
    )
    rows += [raw_celery_cpu(n, concurrency, flavour) for flavour in ("bare", "flower")]
    save(
        "profile",
        f"CPU per event, {n} no-op events end to end ({n / took:.0f} events/s), "
        f"1 worker x prefork {concurrency}",
        rows,
        events_per_second=n / took,
    )


def raw_celery_cpu(n: int, concurrency: int, flavour: str) -> dict[str, Any]:
    """The yardstick's cycles: plain Celery running ``n`` no-op tasks (see
    :mod:`bench.throughput`), its worker's, the broker's and the publisher's CPU."""
    from bench.raw_celery import app

    queue = f"rawprof-{uuid.uuid4().hex[:8]}"
    with raw_celery_worker(queue, concurrency, flavour=flavour) as proc:
        inspect = app.control.inspect(timeout=1)
        wait_for(lambda: bool(inspect.ping()), 60, "raw worker up")
        before = (_group_cpu(proc.pid), broker_cpu(), _self_cpu())
        with app.producer_or_acquire() as producer:
            for i in range(n):
                app.send_task("rawbench.noop", args=[i], queue=queue, producer=producer)

        def done() -> bool:
            stats = inspect.stats() or {}
            return bool(
                sum(s.get("total", {}).get("rawbench.noop", 0) for s in stats.values()) >= n
            )

        wait_for(done, 600, "raw tasks executed")
        after = (_group_cpu(proc.pid), broker_cpu(), _self_cpu())
    worker, broker, publisher = (1000 * (a - b) / n for a, b in zip(after, before, strict=True))
    return {
        "process": f"{flavour} Celery: worker / broker / publisher",
        "CPU ms/event": worker + broker + publisher,
        "where (share of its samples)": f"{worker:.2f} / {broker:.2f} / {publisher:.2f} ms",
    }


def _samples(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[_category(stack)] += int(count)
    return counts


if __name__ == "__main__":
    run()
