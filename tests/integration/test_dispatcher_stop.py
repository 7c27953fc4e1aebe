"""A dispatcher stopped cleanly (SIGTERM, as ``docker stop`` and a rolling update do) gives
up what it holds before it exits — a single dispatcher its lease, a shard its partitions
and its membership — so that a standby or the other shards take over at once rather than
after the lease has expired. (uvicorn raises the signal again once it has shut down, which
ends the process there: the loop must have stopped by then.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa

from harness.processes import Stack, wait_until
from shared.db import make_engine

#: long enough that no lease expires during a test: an expiry is not a release
LEASE = 60


def _stats(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/stats", timeout=5).json()
    return body


def _rows(db_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def test_a_dispatcher_stopped_with_sigterm_releases_the_dispatcher_lease(
    stack_factory: Callable[..., Stack], db_url: str
) -> None:
    stack = stack_factory(DISPATCHER_LEASE_SECONDS=LEASE)
    dispatcher = stack.dispatcher()
    wait_until(lambda: _stats(stack.dispatcher_url)["active"], 30, what="the dispatcher active")
    assert _rows(db_url, "SELECT expires_at FROM leases WHERE name = 'dispatcher'")[0][0] > 0
    dispatcher.stop()
    assert dispatcher.proc is not None and dispatcher.proc.poll() is not None
    [(expires_at,)] = _rows(db_url, "SELECT expires_at FROM leases WHERE name = 'dispatcher'")
    assert expires_at == 0.0, "the stopped dispatcher left its lease to expire"


def test_a_shard_stopped_with_sigterm_releases_its_partitions_and_leaves(
    stack_factory: Callable[..., Stack], db_url: str
) -> None:
    stack = stack_factory(DISPATCHER_PARTITIONS=8, DISPATCHER_LEASE_SECONDS=LEASE)
    stack.dispatcher()
    second, url = stack.another_dispatcher()
    wait_until(lambda: _stats(url)["shard"]["serving"], 60, what="the second shard serving")
    name = _stats(url)["shard"]["name"]
    second.stop()
    assert second.proc is not None and second.proc.poll() is not None
    held = _rows(db_url, "SELECT name FROM leases WHERE holder = :name", name=name)
    assert held == [], f"the stopped shard left {held} to expire"
    assert _rows(db_url, "SELECT shard FROM dispatcher_shards WHERE shard = :n", n=name) == []
