"""Partition leases and shard membership (shared.partition_leases), on SQLite and
PostgreSQL: taken, renewed and expired by the ledger's clock, fenced by a token that
changes with the holder, decided by the database when shards race, and held by a fence
until the transaction that acted for the partition ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import sqlalchemy as sa

from harness.processes import wait_until
from shared import clock, migrations
from shared import partition_leases as pl
from shared.db import dispatcher_shards, hosts, leases, make_engine
from shared.errors import LeaseLost
from shared.lease import Lease
from shared.store import Store
from tests.ledgers import at_once, pass_time

T = TypeVar("T")

#: seconds a lease lasts in these tests
LEASE = 10.0


@pytest.fixture
def engine(ledger_url: str) -> Iterator[sa.Engine]:
    store = Store.connect(ledger_url)
    with store.engine.begin() as conn:
        pl.ensure(conn, range(4))
    yield store.engine
    store.engine.dispose()


@pytest.fixture
def other(ledger_url: str, engine: sa.Engine) -> Iterator[sa.Engine]:
    """A second process's engine on the same ledger."""
    e = make_engine(ledger_url)
    yield e
    e.dispose()


def tx(engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
    """``work`` in a transaction of its own, committed."""
    with engine.begin() as conn:
        return work(conn)


def take(engine: sa.Engine, shard: str, partition: int, seconds: float = LEASE) -> int | None:
    return tx(engine, lambda c: pl.take(c, shard, partition, seconds))


def holders(engine: sa.Engine) -> dict[int, str]:
    return tx(engine, lambda c: pl.holders(c, range(4)))


def marked(engine: sa.Engine, name: str) -> bool:
    """Whether a caller's write (a host row named ``name``) was committed."""
    with engine.connect() as conn:
        return conn.execute(sa.select(hosts.c.seq).where(hosts.c.host == name)).first() is not None


def mark(conn: sa.Connection, name: str) -> None:
    conn.execute(hosts.insert().values(host=name, available=True))


# -- taking, renewing, releasing -----------------------------------------------------
def test_one_holder_of_a_partition_until_its_lease_expires(engine: sa.Engine) -> None:
    assert take(engine, "a", 0) == 1  # a fresh lease: the first tenure
    pass_time(engine, 5)
    assert take(engine, "b", 0) is None  # a's runs 5 s more
    assert take(engine, "a", 0) == 1  # renewed: 10 s from now
    pass_time(engine, 7)
    assert take(engine, "b", 0) is None
    assert holders(engine) == {0: "a"}
    pass_time(engine, 3.5)
    assert holders(engine) == {}  # expired: no live holder
    assert take(engine, "b", 0) == 2  # a stopped renewing: b takes over
    assert take(engine, "a", 0) is None
    assert holders(engine) == {0: "b"}
    assert take(engine, "a", 9) is None  # never created (ensure)
    with pytest.raises(ValueError):
        take(engine, "", 1)  # the empty name is no one's


def test_the_token_changes_with_the_holder_only(engine: sa.Engine) -> None:
    assert take(engine, "a", 0) == 1
    assert take(engine, "a", 0) == 1
    assert tx(engine, lambda c: pl.renew_all(c, "a", [0], LEASE)) == {0: 1}
    pass_time(engine, LEASE + 1)
    assert take(engine, "a", 0) == 1  # expired, but no one held it since
    pass_time(engine, LEASE + 1)
    assert take(engine, "b", 0) == 2
    pass_time(engine, LEASE + 1)
    assert take(engine, "a", 0) == 3
    tx(engine, lambda c: pl.release(c, "a", [0]))
    assert take(engine, "a", 0) == 4  # released: a new tenure, even for the same shard
    # every lease counts so, the dispatcher's too
    a, b = Lease("dispatcher", "a", LEASE), Lease("dispatcher", "b", LEASE)
    tx(engine, a.create)
    token = sa.select(leases.c.token).where(leases.c.name == "dispatcher")
    assert tx(engine, a.take) and tx(engine, a.take)
    assert tx(engine, lambda c: c.execute(token).scalar_one()) == 1
    pass_time(engine, LEASE + 1)
    assert tx(engine, b.take)
    assert tx(engine, lambda c: c.execute(token).scalar_one()) == 2


def test_renew_all_keeps_what_is_still_held_in_one_statement(engine: sa.Engine) -> None:
    for p in (0, 1, 2):
        assert take(engine, "a", p) == 1
    pass_time(engine, LEASE + 1)
    assert take(engine, "b", 2) == 2  # taken over while a was paused
    kept = tx(engine, lambda c: pl.renew_all(c, "a", [0, 1, 2, 3, 9], LEASE))
    assert kept == {0: 1, 1: 1}  # 1 and 0 expired but no one took them
    assert holders(engine) == {0: "a", 1: "a", 2: "b"}
    tx(engine, lambda c: pl.release(c, "a", [1]))
    assert tx(engine, lambda c: pl.renew_all(c, "a", [0, 1], LEASE)) == {0: 1}
    assert tx(engine, lambda c: pl.renew_all(c, "a", [], LEASE)) == {}


def test_a_release_hands_the_partition_over_at_once(engine: sa.Engine) -> None:
    assert take(engine, "a", 0, 600) == 1
    assert take(engine, "b", 0) is None
    tx(engine, lambda c: pl.release(c, "b", [0]))  # not b's: nothing changes
    assert holders(engine) == {0: "a"}
    tx(engine, lambda c: pl.release(c, "a", [0]))
    assert holders(engine) == {}
    assert take(engine, "b", 0) == 2


def test_ensure_keeps_the_leases_there_are(engine: sa.Engine) -> None:
    assert take(engine, "a", 0) == 1
    tx(engine, lambda c: pl.ensure(c, range(6)))  # again, and two more
    assert holders(engine) == {0: "a"}
    assert take(engine, "b", 5) == 1


# -- racing shards -------------------------------------------------------------------
def test_two_shards_racing_for_a_partition_one_gets_it(engine: sa.Engine, other: sa.Engine) -> None:
    """Round after round the lease expires and two shards, each on its own engine (as
    two processes), take it at once: exactly one holds it, with the next token whenever
    it changed hands."""
    last: tuple[str, int] | None = None
    for n in range(30):
        pass_time(engine, LEASE + 1)
        got = at_once(lambda: take(engine, "a", 0), lambda: take(other, "b", 0))
        winners = [(s, t) for s, t in zip("ab", got, strict=True) if t is not None]
        assert len(winners) == 1, f"round {n}: {got}"
        shard, token = winners[0]
        assert holders(engine) == {0: shard}
        if last is not None:
            assert token == last[1] + (shard != last[0])
        last = (shard, token)


def test_two_shards_taking_every_partition_at_once_split_nothing_twice(
    engine: sa.Engine, other: sa.Engine
) -> None:
    """Each takes all four in one transaction, in ascending order: every partition has
    one holder, and the two never deadlock."""

    def take_all(e: sa.Engine, shard: str) -> dict[int, int]:
        def work(c: sa.Connection) -> dict[int, int]:
            got = {p: pl.take(c, shard, p, LEASE) for p in range(4)}
            return {p: t for p, t in got.items() if t is not None}

        return tx(e, work)

    for _ in range(10):
        pass_time(engine, LEASE + 1)
        a, b = at_once(lambda: take_all(engine, "a"), lambda: take_all(other, "b"))
        assert not a.keys() & b.keys()
        assert a.keys() | b.keys() == set(range(4))
        assert holders(engine) == {**dict.fromkeys(a, "a"), **dict.fromkeys(b, "b")}


# -- the fence -----------------------------------------------------------------------
def test_a_fence_with_a_stale_token_rolls_the_callers_write_back(engine: sa.Engine) -> None:
    first = take(engine, "a", 0)
    assert first == 1

    def act(shard: str, token: int, name: str, partition: int = 0) -> None:
        def work(c: sa.Connection) -> None:
            mark(c, name)
            pl.fence(c, shard, partition, token)

        tx(engine, work)

    act("a", first, "a1")
    assert marked(engine, "a1")
    pass_time(engine, LEASE + 1)  # a paused past its lease
    with pytest.raises(LeaseLost):
        act("a", first, "a-expired")
    assert not marked(engine, "a-expired")
    second = take(engine, "b", 0)
    assert second == 2
    with pytest.raises(LeaseLost):
        act("a", first, "a-late")  # a's write after the takeover
    assert not marked(engine, "a-late")
    with pytest.raises(LeaseLost):
        act("b", first, "b-stale")  # the holder, but the token of another tenure
    assert not marked(engine, "b-stale")
    with pytest.raises(LeaseLost):
        act("b", second, "b-elsewhere", partition=9)  # no such lease
    act("b", second, "b1")
    assert marked(engine, "b1")
    pass_time(engine, LEASE + 1)
    assert take(engine, "a", 0) == 3
    with pytest.raises(LeaseLost):
        act("a", first, "a-old-tenure")  # a holds it again, in a new tenure
    assert not marked(engine, "a-old-tenure")


def test_a_takeover_waits_for_the_transaction_a_fence_passed(
    engine: sa.Engine, other: sa.Engine
) -> None:
    """A shard fences its transaction while its lease still runs, then pauses before it
    writes, while the lease expires and another shard takes the partition over: the
    takeover waits for the transaction, so the first shard's write and the second
    shard's tenure never overlap. (Without the fence's lock, FOR SHARE on PostgreSQL
    and the write lock on SQLite, this fails on both.)"""
    assert take(engine, "a", 0, 1.0) == 1
    order: list[str] = []
    taken: dict[str, int | None] = {}
    with engine.connect() as watch:
        expiry = watch.execute(
            sa.select(leases.c.expires_at).where(leases.c.name == pl.lease_name(0))
        ).scalar_one()
        watch.commit()
        with engine.begin() as conn:
            pl.fence(conn, "a", 0, 1)  # its first statement: nothing written yet

            def past_expiry() -> bool:
                now = clock.read(watch)
                watch.commit()  # a fresh snapshot next time
                return bool(now > expiry)

            wait_until(past_expiry, timeout=30, what="the lease expired")

            def takeover() -> None:
                taken["b"] = take(other, "b", 0)
                order.append("b took")

            thread = threading.Thread(target=takeover)
            thread.start()
            if engine.dialect.name == "postgresql":
                wait_until(lambda: _waiting_on_a_lock(watch), timeout=30, what="b waits")
            else:
                time.sleep(0.2)  # b's update, waiting for the write lock meanwhile
            mark(conn, "a-slow")  # the write the fence let through
            order.append("a commits")
        thread.join(30)
    assert order == ["a commits", "b took"]
    assert taken["b"] == 2
    assert marked(engine, "a-slow")
    assert holders(engine) == {0: "b"}


def _waiting_on_a_lock(conn: sa.Connection) -> bool:
    waiting = conn.execute(
        sa.text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    ).scalar_one()
    conn.commit()
    return bool(waiting)


# -- membership ----------------------------------------------------------------------
def test_shards_heartbeat_expire_and_leave(engine: sa.Engine) -> None:
    def beat(shard: str, demand: int, in_flight: int, partitions: int) -> None:
        tx(engine, lambda c: pl.heartbeat(c, shard, LEASE, demand, in_flight, partitions))

    def live() -> list[pl.ShardRow]:
        return tx(engine, pl.live_shards)

    assert live() == []
    beat("b", 1, 0, 2)
    beat("a", 3, 2, 1)
    first = live()
    assert [(s.shard, s.demand, s.in_flight, s.partitions) for s in first] == [
        ("a", 3, 2, 1),
        ("b", 1, 0, 2),
    ]
    assert all(s.started_at < s.expires_at for s in first)
    pass_time(engine, 5)
    beat("a", 0, 5, 2)  # renewed: the same start, the new word
    a = live()[0]
    assert (a.shard, a.demand, a.in_flight, a.partitions) == ("a", 0, 5, 2)
    assert a.started_at == first[0].started_at - 5  # as moved by pass_time
    pass_time(engine, 6)
    assert [s.shard for s in live()] == ["a"]  # b's expired
    pass_time(engine, 5)
    assert live() == []
    beat("a", 0, 0, 0)  # back: a new start, and b's void row is gone
    again = live()
    assert [s.shard for s in again] == ["a"] and again[0].started_at > a.started_at
    rows = tx(engine, lambda c: c.execute(sa.select(dispatcher_shards.c.shard)).scalars().all())
    assert rows == ["a"]
    tx(engine, lambda c: pl.leave(c, "a"))
    assert live() == []


# -- the migration -------------------------------------------------------------------
def test_a_0004_ledger_gets_tokens_and_the_shards_table(ledger_url: str) -> None:
    from alembic import command

    engine = make_engine(ledger_url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrations.config(conn), "0004")
            conn.execute(
                sa.text(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ('dispatcher', 'a', 1)"
                )
            )
        Store(engine).create_schema()  # what every service does when it starts
        with engine.begin() as conn:
            assert migrations.current(conn) == migrations.head()
            assert conn.execute(sa.select(leases.c.holder, leases.c.token)).all() == [("a", 0)]
            assert pl.live_shards(conn) == []
            pl.heartbeat(conn, "s", LEASE, 0, 0, 0)
            assert Lease("dispatcher", "b", LEASE).take(conn)
            assert conn.execute(sa.select(leases.c.token)).scalar_one() == 1
    finally:
        engine.dispose()
