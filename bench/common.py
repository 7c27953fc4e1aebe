"""What several benchmarks share: a private Carousel stack, the ledger, raw Celery."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import kombu
import sqlalchemy as sa

from harness.broker import delete_topology
from harness.processes import Stack, free_port, wait_until
from shared.store import Store, events
from shared.topology import Topology

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
BIN = Path(sys.executable).parent


@contextmanager
def carousel(**env: Any) -> Iterator[tuple[Stack, Store]]:
    """Producer + scheduler (+ what the caller starts) on a private prefix and ledger."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="carousel-bench-"))
    db = f"sqlite:///{workdir / 'ledger.db'}"
    base = {
        "AMQP_URL": AMQP_URL,
        "CAROUSEL_PREFIX": prefix,
        "CAROUSEL_DB_URL": db,
        "PRODUCER_PORT": str(free_port()),
        "SCHEDULER_PORT": str(free_port()),
        "ELASTICITY_PORT": str(free_port()),
        "LOG_LEVEL": "WARNING",
    }
    stack = Stack({**base, **{k: str(v) for k, v in env.items()}}, workdir)
    store = Store.connect(db)
    try:
        yield stack, store
    finally:
        stack.stop()
        delete_topology(AMQP_URL, Topology(prefix), store.all_keys(), stack.profiles)
        store.engine.dispose()


def count_status(store: Store, *statuses: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(events).where(events.c.status.in_(statuses))
            ).scalar_one()
        )


def post_all(url: str, batches: list[list[dict[str, Any]]], clients: int = 4) -> float:
    """POST every batch with ``clients`` concurrent connections; seconds taken."""
    import asyncio

    async def main() -> None:
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)

        async def client() -> None:
            async with httpx.AsyncClient(timeout=120) as http:
                while not queue.empty():
                    batch = queue.get_nowait()
                    r = await http.post(f"{url}/events", json={"events": batch})
                    r.raise_for_status()

        await asyncio.gather(*(client() for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - started


@contextmanager
def raw_celery_worker(
    queue: str, concurrency: int = 2, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "BENCH_AMQP_URL": AMQP_URL,
        "BENCH_QUEUE": queue,
        "BENCH_LOG": str(log or ""),
    }
    proc = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "bench.raw_celery:app",
            "worker",
            "-Q",
            queue,
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-n",
            f"raw-{uuid.uuid4().hex[:6]}@%h",
            "--loglevel",
            "WARNING",
            "-E",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)
        with kombu.Connection(AMQP_URL) as conn:
            conn.channel().queue_delete(queue)


def wait_for(cond: Any, timeout: float, what: str) -> None:
    wait_until(cond, timeout, interval=0.05, what=what)
