"""The dispatcher shards' share tables (shared.share_tables), on SQLite and PostgreSQL:
one sequence of versions, a new one only once the newest is agreed, one winner of two
publishers at once, and an agreement that a dead shard stops blocking once its heartbeat
expired and its partitions are taken, but that an unheld partition or a shard that just
took one holds back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from shared import partition_leases as pl
from shared import share_tables as st
from shared.db import dispatcher_shards, dispatcher_share_tables, make_engine
from shared.store import Store
from tests.ledgers import at_once, pass_time

LEASE = 10.0
PARTITIONS = range(2)


@pytest.fixture
def engine(ledger_url: str) -> Iterator[sa.Engine]:
    store = Store.connect(ledger_url)
    with store.engine.begin() as conn:
        pl.ensure(conn, PARTITIONS)
    yield store.engine
    store.engine.dispose()


def beat(engine: sa.Engine, shard: str, in_flight: int, seen: int | None) -> None:
    with engine.begin() as conn:
        pl.heartbeat(conn, shard, LEASE, 1, in_flight, 1, seen)


def hold(engine: sa.Engine, shard: str, partition: int) -> None:
    with engine.begin() as conn:
        assert pl.take(conn, shard, partition, LEASE) is not None


def publish(engine: sa.Engine, shares: dict[str, int]) -> int:
    with engine.begin() as conn:
        return st.publish(conn, shares, PARTITIONS)


def agreed(engine: sa.Engine) -> int | None:
    with engine.begin() as conn:
        table = st.agreed(conn, PARTITIONS)
    return None if table is None else table.version


def versions(engine: sa.Engine) -> list[int]:
    with engine.begin() as conn:
        return list(conn.execute(sa.select(dispatcher_share_tables.c.version)).scalars())


def test_a_new_version_only_once_the_newest_is_agreed(engine: sa.Engine) -> None:
    hold(engine, "a", 0)
    hold(engine, "b", 1)
    assert publish(engine, {"a": 4, "b": 4}) == 1  # the first needs nothing
    assert publish(engine, {"a": 4, "b": 4}) == 1  # the same: nothing new
    with engine.begin() as conn:
        assert st.latest(conn) == st.ShareTable(1, {"a": 4, "b": 4})
    beat(engine, "a", 3, 1)
    beat(engine, "b", 5, 1)  # over its share: not agreed
    assert agreed(engine) is None
    assert publish(engine, {"a": 6, "b": 2}) == 1
    beat(engine, "b", 4, None)  # within, but no report at version 1
    assert agreed(engine) is None
    beat(engine, "b", 4, 1)
    assert agreed(engine) == 1
    with engine.begin() as conn:
        assert st.reports(conn, 1) == {"a": 3, "b": 4}
    assert publish(engine, {"a": 6, "b": 2}) == 2
    assert agreed(engine) == 1  # the reports are at version 1: 2 is not agreed yet
    beat(engine, "a", 3, 2)
    beat(engine, "b", 4, 2)  # over its new share
    assert agreed(engine) == 1
    beat(engine, "b", 2, 2)
    assert agreed(engine) == 2
    for version in range(3, 3 + st.KEEP + 1):  # each agreed at once: the last few are kept
        assert publish(engine, {"a": 6 - version % 2, "b": 2 + version % 2}) == version
        beat(engine, "a", 0, version)
        beat(engine, "b", 0, version)
    assert versions(engine) == list(range(3 + st.KEEP + 1 - st.KEEP, 3 + st.KEEP + 1))


def test_two_publishers_at_once_make_one_version(engine: sa.Engine, ledger_url: str) -> None:
    hold(engine, "a", 0)
    hold(engine, "b", 1)
    publish(engine, {"a": 4, "b": 4})
    beat(engine, "a", 0, 1)
    beat(engine, "b", 0, 1)
    others = [make_engine(ledger_url) for _ in range(2)]
    try:
        got = at_once(
            lambda: publish(others[0], {"a": 6, "b": 2}),
            lambda: publish(others[1], {"a": 2, "b": 6}),
        )
    finally:
        for e in others:
            e.dispose()
    assert got == [2, 2]  # the loser reads the winner's
    assert versions(engine) == [1, 2]
    with engine.begin() as conn:
        newest = st.latest(conn)
    assert newest is not None and newest.shares in ({"a": 6, "b": 2}, {"a": 2, "b": 6})


def test_a_dead_shard_blocks_nothing_once_its_partitions_are_taken(engine: sa.Engine) -> None:
    hold(engine, "a", 0)
    hold(engine, "b", 1)
    publish(engine, {"a": 4, "b": 4})
    beat(engine, "a", 4, 1)
    beat(engine, "b", 4, 1)
    assert publish(engine, {"a": 8}) == 2  # as if b had died
    beat(engine, "a", 4, 2)
    assert agreed(engine) == 1  # b lives and has not seen 2
    pass_time(engine, LEASE + 1)  # b dies (a's heartbeat and lease expire too)
    beat(engine, "a", 4, 2)
    assert agreed(engine) == 1  # a's lease expired, b's partition is held by no one
    hold(engine, "a", 0)
    with engine.begin() as conn:
        assert pl.take(conn, "a", 1, LEASE) is not None
        st.void_report(conn, "a")  # b's events in flight are a's count now
    assert agreed(engine) == 1  # until a reports them
    beat(engine, "a", 7, 2)
    assert agreed(engine) == 2


def test_a_partition_counts_as_held_only_by_a_live_shard(engine: sa.Engine) -> None:
    """A dead shard's heartbeat may expire a moment before its leases (they are stamped
    by two statements): its partitions are nobody's count already."""
    hold(engine, "a", 0)
    hold(engine, "b", 1)
    publish(engine, {"a": 4, "b": 4})
    beat(engine, "a", 0, 1)
    beat(engine, "b", 0, 1)
    assert agreed(engine) == 1
    assert publish(engine, {"a": 8}) == 2
    beat(engine, "a", 0, 2)
    with engine.begin() as conn:
        conn.execute(
            dispatcher_shards.update()
            .where(dispatcher_shards.c.shard == "b")
            .values(expires_at=dispatcher_shards.c.expires_at - LEASE - 1)
        )
        assert pl.holders(conn, PARTITIONS) == {0: "a", 1: "b"}
    assert agreed(engine) == 1
