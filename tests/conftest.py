"""Fixtures. Integration tests need a real RabbitMQ: ``AMQP_URL`` when set, else a
testcontainers one when a Docker engine answers, else they skip locally and FAIL in CI
(CI=true) — a broker-less CI run must not pass by skipping everything."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa

from harness.broker import delete_topology
from harness.processes import Stack, free_port
from shared.db import make_engine
from shared.store import Store
from shared.topology import Topology
from tests.effects import EffectRecorder
from tests.ledgers import KINDS, fresh_ledger_url

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "localhost", parsed.port or 5672), 2):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    if _reachable(url):
        yield url
        return
    if _docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as rabbit:
            host = rabbit.get_container_host_ip()
            port = rabbit.get_exposed_port(rabbit.port)
            yield f"amqp://guest:guest@{host}:{port}//"
        return
    reason = f"no RabbitMQ at {url} and no Docker engine for testcontainers"
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(params=KINDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty ledger, once on SQLite and once on PostgreSQL (see tests.ledgers)."""
    with fresh_ledger_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def open_store(ledger_url: str) -> Iterator[Callable[[], Store]]:
    """Opens Stores on one ledger, each with an engine of its own (what one process, or
    one shard, would have), SQLite and PostgreSQL in turn."""
    opened: list[Store] = []

    def make() -> Store:
        store = Store.connect(ledger_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.engine.dispose()


@pytest.fixture
def engines(ledger_url: str) -> Iterator[list[sa.Engine]]:
    """Four engines on one migrated ledger (as four dispatcher shards, each a process of
    its own, would have), SQLite and PostgreSQL in turn."""
    Store.connect(ledger_url).engine.dispose()  # the schema
    made = [make_engine(ledger_url) for _ in range(4)]
    yield made
    for engine in made:
        engine.dispose()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def profiles_used() -> set[str]:
    """Worker profiles the test's stacks named (their queues are deleted afterwards)."""
    return set()


@pytest.fixture
def prefix(amqp_url: str, db_url: str, profiles_used: set[str]) -> Iterator[str]:
    """A private topology for one test. Afterwards its queues and exchanges are deleted
    from the broker (the per-key queues are those of the keys in the test's ledger)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    store = Store.connect(db_url)
    delete_topology(amqp_url, Topology(name), store.all_keys(), profiles_used)
    store.engine.dispose()


@pytest.fixture
def recorder() -> Iterator[EffectRecorder]:
    """A webhook endpoint counting every action's effects (see EffectRecorder)."""
    rec = EffectRecorder()
    yield rec
    rec.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test's report carries the log tails of the services its stacks ran."""
    report = yield
    stacks: list[Stack] = getattr(item, "carousel_stacks", [])
    if report.failed and call.when == "call" and stacks:
        for n, stack in enumerate(stacks):
            report.sections.append((f"Carousel services of stack {n}", stack.logs(150)))
    return report


@pytest.fixture
def stack_factory(
    request: pytest.FixtureRequest,
    amqp_url: str,
    prefix: str,
    db_url: str,
    tmp_path: Path,
    profiles_used: set[str],
) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []
    request.node.carousel_stacks = stacks  # read by pytest_runtest_makereport

    def make(**env: Any) -> Stack:
        base = {
            "AMQP_URL": amqp_url,
            "CAROUSEL_PREFIX": prefix,
            "CAROUSEL_DB_URL": db_url,
            "PRODUCER_PORT": str(free_port()),
            "DISPATCHER_PORT": str(free_port()),
            "ELASTICITY_PORT": str(free_port()),
            "FLOWER_PORT": str(free_port()),
            "SIMCLOUD_PORT": (simcloud_port := str(free_port())),
            "SIMCLOUD_URL": f"http://127.0.0.1:{simcloud_port}",
            "WORKER_CONCURRENCY": "4",
            "LOG_LEVEL": "INFO",
            # a dead worker's event is taken over within seconds, not half a minute
            "CLAIM_LEASE_SECONDS": "3",
            "SWEEP_INTERVAL": "1",
        }
        stack = Stack({**base, **{k: str(v) for k, v in env.items()}}, tmp_path)
        stacks.append(stack)
        profiles_used.update(stack.profiles)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which kind of broker the broker-kill tests used (a container or a private node)."""
    from harness.container_broker import USED

    if USED:
        kinds = ", ".join(f"{kind} x{USED.count(kind)}" for kind in dict.fromkeys(USED))
        terminalreporter.write_line(f"brokers killed and restarted by the tests: {kinds}")
