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


#: the ledger of every benchmark: ``sqlite`` (a file of its own, the default) or
#: ``postgresql`` (a database of its own on BENCH_PG_URL's server, dropped afterwards)
LEDGER = os.environ.get("BENCH_LEDGER", "sqlite")


def on_ledger(name: str) -> str:
    """A result's name for this run's ledger: ``ingest``, or ``ingest-postgresql``."""
    return name if LEDGER == "sqlite" else f"{name}-{LEDGER}"


PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def ledger_url(workdir: Path) -> Iterator[str]:
    """A fresh, empty ledger of the kind BENCH_LEDGER names."""
    if LEDGER == "sqlite":
        yield f"sqlite:///{workdir / 'ledger.db'}"
        return
    name = f"carousel_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def carousel(**env: Any) -> Iterator[tuple[Stack, Store]]:
    """Producer + dispatcher (+ what the caller starts) on a private prefix and ledger."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="carousel-bench-"))
    with ledger_url(workdir) as db, _carousel(prefix, workdir, db, env) as pair:
        yield pair


@contextmanager
def _carousel(
    prefix: str, workdir: Path, db: str, env: dict[str, Any]
) -> Iterator[tuple[Stack, Store]]:
    base = {
        "AMQP_URL": AMQP_URL,
        "CAROUSEL_PREFIX": prefix,
        "CAROUSEL_DB_URL": db,
        "PRODUCER_PORT": str(free_port()),
        "DISPATCHER_PORT": str(free_port()),
        "ELASTICITY_PORT": str(free_port()),
        "LOG_LEVEL": "WARNING",
    }
    stack = Stack({**base, **{k: str(v) for k, v in env.items()}}, workdir)
    store = Store.connect(db)
    try:
        yield stack, store
    finally:
        stack.stop()
        delete_topology(
            str(env.get("AMQP_URL", AMQP_URL)), Topology(prefix), store.all_keys(), stack.profiles
        )
        store.engine.dispose()


def count_status(store: Store, *statuses: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(events).where(events.c.status.in_(statuses))
            ).scalar_one()
        )


def post_all(url: str, batches: list[list[dict[str, Any]]], clients: int = 4) -> float:
    """POST every batch with ``clients`` concurrent connections; seconds taken. A 503
    (nothing accepted: the broker or the ledger busy) is posted again, as a client
    should, up to a minute."""
    import asyncio

    async def main() -> None:
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)

        async def client() -> None:
            async with httpx.AsyncClient(timeout=120) as http:
                while not queue.empty():
                    batch = queue.get_nowait()
                    for _ in range(120):
                        r = await http.post(f"{url}/events", json={"events": batch})
                        if r.status_code != 503:
                            break
                        await asyncio.sleep(0.5)
                    r.raise_for_status()

        await asyncio.gather(*(client() for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - started


@contextmanager
def raw_celery_worker(
    queue: str,
    concurrency: int = 2,
    log: Path | None = None,
    flavour: str = "flower",
    pool: str = "prefork",
) -> Iterator[subprocess.Popen[bytes]]:
    """A plain Celery worker of :mod:`bench.raw_celery`; ``flavour`` "flower": task events
    on and late acks, as under Flower; "bare": neither."""
    env = {
        **os.environ,
        "BENCH_AMQP_URL": AMQP_URL,
        "BENCH_QUEUE": queue,
        "BENCH_LOG": str(log or ""),
        "BENCH_FLAVOUR": flavour,
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
            pool,
            "-c",
            str(concurrency),
            "-n",
            f"raw-{uuid.uuid4().hex[:6]}@%h",
            "--loglevel",
            "WARNING",
            *(["-E"] if flavour == "flower" else []),
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


def broker_cpu() -> float:
    """CPU seconds of the local RabbitMQ: every beam.smp but a private node's (the tests
    and the fault suite start their own, ``harness.private_broker``, named in its
    environment, and stop them: counting them would add or take away their CPU)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            if "(beam.smp)" not in text or _private_node(stat.parent):
                continue
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _private_node(proc: Path) -> bool:
    """Whether the beam.smp of ``proc`` is a node of another name than the default
    ``rabbit@...``."""
    for var in (proc / "environ").read_bytes().split(b"\0"):
        if var.startswith(b"RABBITMQ_NODENAME="):
            return not var.split(b"=", 1)[1].startswith(b"rabbit@")
    return False


def declare_queues(channel: Any, names: list[str], arguments: dict[str, Any] | None = None) -> None:
    """Declare ``names`` durable on ``channel``, pipelined: rounds of 200 declares, each
    round waiting for the broker's answer to its last one only."""
    for i in range(0, len(names), 200):
        chunk = names[i : i + 200]
        for name in chunk[:-1]:
            channel.queue_declare(
                name, durable=True, auto_delete=False, arguments=arguments, nowait=True
            )
        channel.queue_declare(chunk[-1], durable=True, auto_delete=False, arguments=arguments)
