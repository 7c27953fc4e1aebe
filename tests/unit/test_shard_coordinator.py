"""Dispatcher shards agreeing on who holds which partition through the ledger
(scheduler.dispatcher.shards), on SQLite and PostgreSQL: each shard with an engine of
its own, as separate processes would have; rounds run as the dispatcher will run them
(release what the round says once nothing of it is served, take what it says)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from scheduler.dispatcher.shards import Coordinator
from shared import partition_leases as pl
from shared.db import make_engine
from shared.errors import LeaseLost
from shared.store import Store
from tests.ledgers import pass_time

PARTITIONS = 12
LEASE = 10.0
LIMIT = 30


@pytest.fixture
def engines(ledger_url: str) -> Iterator[list[sa.Engine]]:
    Store.connect(ledger_url).engine.dispose()  # the schema
    made = [make_engine(ledger_url) for _ in range(4)]
    yield made
    for engine in made:
        engine.dispose()


def _shard(engine: sa.Engine, name: str) -> Coordinator:
    return Coordinator(engine, name, PARTITIONS, LEASE, LIMIT)


def _rounds(shards: list[Coordinator], demand: dict[str, int] | None = None) -> None:
    """Rounds of every shard until each holds what the plan gives it."""
    for _ in range(10):
        settled = True
        for shard in shards:
            seen = shard.observe((demand or {}).get(shard.shard, 0), 0)
            shard.release(seen.release)
            shard.take(seen.take)
            settled &= set(shard.held) == seen.planned
        if settled:
            return
    raise AssertionError("the shards did not settle in 10 rounds")


def _holders(engine: sa.Engine) -> dict[int, str]:
    with engine.begin() as conn:
        return pl.holders(conn, range(PARTITIONS))


def test_shards_split_the_partitions_evenly_and_rebalance_when_one_joins(
    engines: list[sa.Engine],
) -> None:
    a, b = _shard(engines[0], "a"), _shard(engines[1], "b")
    _rounds([a, b])
    assert sorted(len(s.held) for s in (a, b)) == [6, 6]
    assert set(a.held).isdisjoint(b.held) and set(a.held) | set(b.held) == set(range(12))
    c = _shard(engines[2], "c")
    _rounds([a, b, c])
    assert [len(s.held) for s in (a, b, c)] == [4, 4, 4]
    holders = _holders(engines[3])
    assert all(holders[p] == s.shard for s in (a, b, c) for p in s.held)
    # a shard that leaves cleanly hands its partitions over at once
    c.leave()
    _rounds([a, b])
    assert sorted(len(s.held) for s in (a, b)) == [6, 6]


def test_a_dead_shards_partitions_are_taken_once_its_leases_expire_with_new_tokens(
    engines: list[sa.Engine],
) -> None:
    a, b, c = (_shard(e, n) for e, n in zip(engines, "abc", strict=False))
    _rounds([a, b, c])
    dead = dict(c.held)  # c stops: no more rounds, nothing released
    seen = a.observe(0, 0)
    assert not seen.take  # its leases still hold: nobody may take them yet
    pass_time(engines[3], LEASE + 1)
    _rounds([a, b])
    assert sorted(len(s.held) for s in (a, b)) == [6, 6]
    for partition, token in dead.items():
        owner = a if partition in a.held else b
        assert owner.held[partition] > token
        # the dead shard, were it only paused, can no longer act for the partition
        with pytest.raises(LeaseLost), engines[2].begin() as conn:
            pl.fence(conn, "c", partition, token)


def test_each_live_shard_gets_its_share_of_the_limit_by_demand(
    engines: list[sa.Engine],
) -> None:
    a, b = _shard(engines[0], "a"), _shard(engines[1], "b")
    _rounds([a, b], {"a": 30, "b": 10})
    seen = a.observe(30, 0)
    assert seen.shares == {"a": 23, "b": 7}  # 22.5 and 7.5: the tie to the first by name
    assert [row.shard for row in seen.live] == ["a", "b"]
