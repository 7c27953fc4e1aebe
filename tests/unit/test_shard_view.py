"""The cluster of dispatcher shards as the ledger holds it (shared.shard_view), on SQLite
and PostgreSQL: the live shards with the partitions they hold, each partition's holder
and token, the share tables and the mode marker; a shard whose heartbeat expired is gone,
and a single dispatcher reads only the marker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from shared import partition_leases as pl
from shared import share_tables as st
from shared.lease import DISPATCHER, Lease
from shared.shard_view import cluster
from shared.store import Store
from tests.ledgers import pass_time

#: seconds a lease or a heartbeat lasts in these tests
LEASE = 10.0
PARTITIONS = 4


@pytest.fixture
def engine(ledger_url: str) -> Iterator[sa.Engine]:
    store = Store.connect(ledger_url)
    with store.engine.begin() as conn:
        pl.ensure(conn, range(PARTITIONS))
        Lease(DISPATCHER, "shards", LEASE).create(conn)
    yield store.engine
    store.engine.dispose()


def read(engine: sa.Engine, partitions: int = PARTITIONS) -> dict[str, Any]:
    with engine.begin() as conn:
        return cluster(conn, partitions)


def beat(
    engine: sa.Engine, shard: str, demand: int, in_flight: int, seen: int | None = None
) -> None:
    """``shard``'s heartbeat, with the partitions it holds counted, and the marker renewed
    (as every shard's round does)."""
    with engine.begin() as conn:
        held = sum(1 for holder in pl.holders(conn, range(PARTITIONS)).values() if holder == shard)
        pl.heartbeat(conn, shard, LEASE, demand, in_flight, held, seen)
        assert Lease(DISPATCHER, "shards", LEASE).take(conn, paused=False)


def take(engine: sa.Engine, shard: str, *partitions: int) -> list[int]:
    with engine.begin() as conn:
        tokens = [pl.take(conn, shard, p, LEASE) for p in partitions]
    assert None not in tokens
    return [t for t in tokens if t is not None]


def between(value: float | None, low: float, high: float) -> bool:
    return value is not None and low <= value <= high


def two_shards(engine: sa.Engine) -> None:
    """A cluster of :data:`PARTITIONS` partitions (their leases made): shard ``a`` holds
    0 and 1, ``b`` 2 and 3, and the share table v1 gives them 6 and 4 slots (for the
    admin API's and the command line's tests)."""
    with engine.begin() as conn:
        pl.ensure(conn, range(PARTITIONS))
        Lease(DISPATCHER, "shards", LEASE).create(conn)
    take(engine, "a", 0, 1)
    take(engine, "b", 2, 3)
    beat(engine, "a", demand=3, in_flight=2)
    beat(engine, "b", demand=1, in_flight=0)
    with engine.begin() as conn:
        assert st.publish(conn, {"a": 6, "b": 4}, range(PARTITIONS)) == 1


def test_two_shards_their_partitions_tokens_and_the_share_tables(engine: sa.Engine) -> None:
    beat(engine, "b", demand=1, in_flight=0)
    beat(engine, "a", demand=3, in_flight=2)
    assert take(engine, "a", 0, 1) == [1, 1]
    assert take(engine, "b", 3) == [1]
    with engine.begin() as conn:
        pl.release(conn, "b", [3])  # a clean hand-over: held by no one, token kept
    assert take(engine, "b", 2, 3) == [1, 2]  # 3 again: a new tenure
    with engine.begin() as conn:
        assert st.publish(conn, {"a": 6, "b": 4}, range(PARTITIONS)) == 1
    pass_time(engine, 4)  # every lease and heartbeat has 6 s left

    got = read(engine)
    assert got["partitions"] == PARTITIONS
    assert got["marker"]["holder"] == "shards" and got["marker"]["paused"] is False
    assert between(got["marker"]["expires_in"], 0, LEASE - 4)
    shards = got["shards"]
    assert [s["shard"] for s in shards] == ["a", "b"]  # by name
    a, b = shards
    assert (a["demand"], a["in_flight"], a["partitions_held"], a["share"]) == (3, 2, [0, 1], 6)
    assert (b["demand"], b["in_flight"], b["partitions_held"], b["share"]) == (1, 0, [2, 3], 4)
    assert a["seen_version"] is None and b["seen_version"] is None  # no report at v1 yet
    for shard in shards:
        assert between(shard["expires_in"], 0, LEASE - 4), shard
        assert isinstance(shard["started_at"], float)
    leases = got["partition_leases"]
    assert [(p["partition"], p["holder"], p["token"]) for p in leases] == [
        (0, "a", 1),
        (1, "a", 1),
        (2, "b", 1),
        (3, "b", 2),
    ]
    assert all(between(p["expires_in"], 0, LEASE - 4) for p in leases), leases
    newest = {"version": 1, "shares": {"a": 6, "b": 4}}
    # not agreed yet: no shard reported at v1 (and there is no version before it)
    assert got["share_tables"] == {"newest": newest, "agreed": None}

    beat(engine, "a", demand=3, in_flight=2, seen=1)
    beat(engine, "b", demand=1, in_flight=0, seen=1)
    got = read(engine)
    assert got["share_tables"] == {"newest": newest, "agreed": newest}
    assert [s["seen_version"] for s in got["shards"]] == [1, 1]


def test_an_expired_shard_is_gone_and_its_partitions_unheld(engine: sa.Engine) -> None:
    beat(engine, "a", demand=1, in_flight=0)
    beat(engine, "dead", demand=5, in_flight=1)
    take(engine, "dead", 0, 2)
    take(engine, "a", 1)
    pass_time(engine, LEASE + 1)  # everything expired ...
    beat(engine, "a", demand=1, in_flight=0)  # ... but a lives on, and renews
    with engine.begin() as conn:
        assert pl.renew_all(conn, "a", [1], LEASE) == {1: 1}

    got = read(engine)
    assert [s["shard"] for s in got["shards"]] == ["a"]
    assert got["shards"][0]["partitions_held"] == [1]
    assert got["shards"][0]["share"] is None  # no share table yet
    assert [(p["partition"], p["holder"], p["token"]) for p in got["partition_leases"]] == [
        (0, None, 1),  # the dead one's last tenure
        (1, "a", 1),
        (2, None, 1),
        (3, None, 0),  # created, never taken
    ]
    assert [p["expires_in"] is None for p in got["partition_leases"]] == [True, False, True, True]
    assert got["share_tables"] == {"newest": None, "agreed": None}


def test_a_partition_without_a_lease_is_listed_unheld(engine: sa.Engine) -> None:
    """More partitions than leases made (a larger DISPATCHER_PARTITIONS, before a shard
    ensured them): the others are listed with no token."""
    got = read(engine, PARTITIONS + 2)
    assert [(p["partition"], p["holder"], p["token"]) for p in got["partition_leases"]][-3:] == [
        (3, None, 0),
        (4, None, None),
        (5, None, None),
    ]


def test_a_single_dispatcher_reads_only_the_marker(engine: sa.Engine) -> None:
    """``partitions`` 0: the marker as a single dispatcher holds it (paused here), and no
    shards, even with the rows a run of shards left."""
    beat(engine, "a", demand=1, in_flight=0)  # left over
    take(engine, "a", 0)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE leases SET expires_at = 0 WHERE name = :n"), {"n": DISPATCHER})
        assert Lease(DISPATCHER, "host-1", LEASE).take(conn, paused=True)
    got = read(engine, 0)
    marker = got.pop("marker")
    assert (marker["holder"], marker["paused"]) == ("host-1", True)
    assert between(marker["expires_in"], 0, LEASE)
    assert got == {
        "partitions": 0,
        "shards": [],
        "partition_leases": [],
        "share_tables": {"newest": None, "agreed": None},
    }


def test_a_marker_no_one_holds(engine: sa.Engine) -> None:
    """Expired (what its holder said of a pause is void), or never made."""
    with engine.begin() as conn:
        assert Lease(DISPATCHER, "host-1", LEASE).take(conn, paused=True)
    pass_time(engine, LEASE + 1)
    unheld = {"holder": None, "expires_in": None, "paused": False}
    assert read(engine, 0)["marker"] == unheld
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM leases WHERE name = :n"), {"n": DISPATCHER})
    assert read(engine)["marker"] == unheld
