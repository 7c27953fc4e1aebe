"""Dispatcher shards agreeing on who holds which partition through the ledger
(scheduler.dispatcher.shards), on SQLite and PostgreSQL: each shard with an engine of
its own, as separate processes would have; rounds run as the dispatcher will run them
(release what the round says once nothing of it is served, take what it says)."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from scheduler.dispatcher.shards import Coordinator, Round
from shared import partition_leases as pl
from shared import share_tables as st
from shared.db import dispatcher_shards, leases, make_engine
from shared.errors import LeaseLost
from shared.lease import DISPATCHER, Lease, holder_paused
from shared.share_tables import ShareTable
from tests.ledgers import pass_time

PARTITIONS = 12
LEASE = 60.0
LIMIT = 30


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
    demand = {"a": 30, "b": 10}
    _rounds([a, b], demand)
    for _ in range(3):  # publish, report, agree
        seen = {s.shard: s.observe(demand[s.shard], 0) for s in (a, b)}
    assert seen["a"].newest is not None
    assert seen["a"].newest.shares == {"a": 23, "b": 7}  # 22.5 and 7.5: the tie by name
    assert seen["b"].agreed == seen["b"].newest
    assert {shard: r.usable for shard, r in seen.items()} == {"a": 23, "b": 7}
    assert [row.shard for row in seen["a"].live] == ["a", "b"]


def test_a_new_table_is_used_at_min_of_old_and_new_until_every_shard_is_within_it(
    engines: list[sa.Engine],
) -> None:
    a, b = _shard(engines[0], "a"), _shard(engines[1], "b")
    _rounds([a, b], {"a": 1, "b": 1})
    for shard in (a, b, a, b):
        seen = shard.observe(1, 0)
    assert seen.newest is not None and seen.newest.shares == {"a": 15, "b": 15}
    assert seen.usable == 15
    # b has 15 in flight; a's demand grows: a publishes a table that gives it more
    assert a.observe(3, 0).published == seen.newest.version + 1
    seen_b = b.observe(1, 15)
    assert seen_b.newest is not None and seen_b.newest.shares == {"a": 23, "b": 7}
    assert seen_b.usable == 7  # min(15, 7): b dispatches nothing more
    seen_a = a.observe(3, 0)
    assert seen_a.usable == 15  # min(15, 23): b is still over its new share
    assert b.observe(1, 7).usable == 7
    assert a.observe(3, 15).usable == 23  # b within its new share: the switch
    assert a.observe(3, 15).agreed == seen_b.newest


# -- the limit across processes: a simulation ---------------------------------------------
def _die(engine: sa.Engine, shard: str) -> None:
    """``shard`` stops (a crash): its heartbeat and its leases expire now, while the
    others', renewed by their rounds, run on."""
    with engine.begin() as conn:
        for table, who in ((dispatcher_shards, "shard"), (leases, "holder")):
            conn.execute(
                table.update()
                .where(table.c[who] == shard)
                .values(expires_at=table.c.expires_at - LEASE - 1)
            )


def test_a_shard_dead_amid_a_switch_has_its_events_counted_before_its_share_is_given(
    engines: list[sa.Engine],
) -> None:
    a, b, c = (_shard(e, n) for e, n in zip(engines, "abc", strict=False))
    _rounds([a, b, c])
    for _ in range(3):
        seen = {s.shard: s.observe({"c": 4}.get(s.shard, 1), 0) for s in (a, b, c)}
    assert seen["c"].newest is not None and seen["c"].newest.shares == {"a": 5, "b": 5, "c": 20}
    assert seen["c"].usable == 20
    first = seen["c"].newest.version
    assert c.observe(1, 20).usable == 20  # c fills its share; its demand drops
    assert a.observe(1, 5).published == first + 1  # {10, 10, 10}
    assert b.observe(1, 5).usable == a.observe(1, 5).usable == 5  # min(5, 10)
    # c dies before it reads the new table, 20 events in flight for its partitions
    theirs = set(c.held)
    _die(engines[2], "c")
    for shard in (a, b):
        # c's share is not handed out while its partitions are nobody's
        assert shard.observe(1, 5).usable == 5
    # a takes them, and counts c's events; its report is void until it reports them
    assert set(a.take(theirs)) == theirs
    assert b.observe(1, 5).usable == 5
    assert a.observe(1, 25).usable == 5  # over its share of 10: the switch waits
    assert b.observe(1, 5).usable == 5
    assert a.observe(1, 10).usable == 10  # within: the table without c's events is agreed
    assert b.observe(1, 5).usable == 10


#: the chance that a task completes at each round of any shard
COMPLETES = 0.1


class Fleet:
    """Shards dispatching against the global limit as their rounds allow, each on an
    engine of its own, and the tasks they started (task -> the partition of its host),
    which run until they complete whoever counts them. A shard counts the tasks it
    dispatched and those of the partitions it takes (as the dispatcher counts the events
    in flight for a partition's hosts when it takes it), until they complete. A shard
    that dies counts nothing more: its tasks are nobody's until a survivor takes their
    partitions. A restart is a new shard, with a new name."""

    def __init__(self, engines: list[sa.Engine], rng: random.Random) -> None:
        self.rng = rng
        self.observer = engines[-1]
        self.shards = {name: _shard(e, name) for name, e in zip("abc", engines, strict=False)}
        self.alive = set(self.shards)
        self.demand = dict.fromkeys(self.shards, 1)
        self.running: dict[int, int] = {}
        self.counted: dict[str, set[int]] = {name: set() for name in self.shards}
        self.next_task = 0
        self.published: list[int] = []
        self.deaths = 0

    def round(self, name: str, dispatch: bool = True) -> Round:
        """One round of shard ``name``, then its moves, then its dispatches (up to what the
        round allows, if ``dispatch``), then some tasks of any shard complete."""
        shard, mine = self.shards[name], self.counted[name]
        before = self._newest()
        seen = shard.observe(self.demand[name], len(mine))
        after = self._newest()
        if after is not None and after != before:
            # published in this round: the next version, once the previous was agreed
            assert seen.published == after.version == (before.version if before else 0) + 1
            assert before is None or self._settled(before)
            self.published.append(after.version)
        shard.release(seen.release)
        got = shard.take(seen.take)
        mine |= {task for task, p in self.running.items() if p in got}
        if dispatch and self.demand[name] and shard.held:
            room = max(seen.usable - len(mine), 0)
            for _ in range(room if self.rng.random() < 0.7 else self.rng.randint(0, room)):
                self.running[self.next_task] = self.rng.choice(sorted(shard.held))
                mine.add(self.next_task)
                self.next_task += 1
        for task in [t for t in self.running if self.rng.random() < COMPLETES]:
            del self.running[task]
            for counted in self.counted.values():
                counted.discard(task)
        assert len(self.running) <= LIMIT, (name, seen)
        return seen

    def _newest(self) -> ShareTable | None:
        with self.observer.begin() as conn:
            return st.latest(conn)

    def _settled(self, table: ShareTable) -> bool:
        with self.observer.begin() as conn:
            live = pl.live_shards(conn)
            holders = pl.holders(conn, range(PARTITIONS))
        return st.settled(table, live, holders, range(PARTITIONS))

    def kill(self, name: str) -> None:
        """``name`` dies; a new shard starts on its engine (a restart: a new name)."""
        self.alive.discard(name)
        self.deaths += 1
        engine = self.shards[name].engine
        _die(engine, name)
        new = f"{name[0]}{self.deaths}"
        self.shards[new] = _shard(engine, new)
        self.alive.add(new)
        self.demand[new] = self.rng.randint(0, 20)
        self.counted[new] = set()

    def run(self, rounds: int, deaths: bool = True) -> None:
        """``rounds`` rounds of the shards alive, in random order, demand changing, now
        and then one dying and a new one starting (if ``deaths``)."""
        for _ in range(rounds):
            if self.rng.random() < 0.1:
                self.demand[self.rng.choice(sorted(self.alive))] = self.rng.randint(0, 20)
            if deaths and self.rng.random() < 0.05:
                self.kill(self.rng.choice(sorted(self.alive)))
            self.round(self.rng.choice(sorted(self.alive)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_shards_in_flight_never_exceed_the_limit_across_table_switches(
    engines: list[sa.Engine], seed: int
) -> None:
    fleet = Fleet(engines, random.Random(seed))
    fleet.run(400)
    assert len(fleet.published) >= 4 and fleet.deaths >= 3  # switches and deaths happened
    # the last death: it blocks nothing. Once the survivors' tasks (theirs, and the dead
    # one's they took over) are within their shares, they agree on a table without it
    # and use the whole limit
    fleet.kill(sorted(fleet.alive)[0])
    fleet.run(100, deaths=False)
    alive = sorted(fleet.alive)

    def agreed() -> bool:
        seen = [fleet.round(name, dispatch=False) for name in alive]
        newest = seen[-1].newest
        return (
            newest is not None
            and set(newest.shares) == set(alive)
            and all(r.agreed == newest for r in seen)
        )

    for _ in range(50):
        if agreed():
            break
    else:
        raise AssertionError(f"the survivors {alive} did not agree on a table of their own")
    assert sum(fleet.round(name).usable for name in alive) == LIMIT


def test_a_single_dispatcher_keeps_shards_from_taking_partitions(
    engines: list[sa.Engine],
) -> None:
    single = Lease(DISPATCHER, "single", LEASE)
    with engines[0].begin() as conn:
        single.create(conn)
        assert single.take(conn, False)
    shard = _shard(engines[1], "a")
    seen = shard.observe(3, 0)
    assert seen.excluded and not seen.take and seen.usable == 0
    assert shard.held == {} and _holders(engines[1]) == {}
    with engines[0].begin() as conn:
        single.release(conn)
    assert not shard.observe(3, 0).excluded


def test_shards_keep_a_single_dispatcher_standing_by(engines: list[sa.Engine]) -> None:
    _rounds([_shard(engines[0], "a"), _shard(engines[1], "b")])
    single = Lease(DISPATCHER, "single", LEASE)
    with engines[2].begin() as conn:
        assert not single.take(conn, False)


def test_a_pause_on_one_shard_reaches_the_others_at_their_next_round(
    engines: list[sa.Engine],
) -> None:
    a, b = _shard(engines[0], "a"), _shard(engines[1], "b")
    _rounds([a, b])
    assert a.observe(0, 0, paused=True).paused
    assert b.observe(0, 0).paused  # no change of its own: it obeys the row
    with engines[2].begin() as conn:
        assert holder_paused(conn, DISPATCHER)  # as the elasticity worker reads it
    assert not b.observe(0, 0, paused=False).paused
    assert not a.observe(0, 0).paused


def test_shards_starting_paused_pause_the_cluster_only_from_cold(
    engines: list[sa.Engine],
) -> None:
    a = Coordinator(engines[0], "a", PARTITIONS, LEASE, LIMIT, start_paused=True)
    assert a.observe(0, 0).paused
    assert not a.observe(0, 0, paused=False).paused
    late = Coordinator(engines[1], "late", PARTITIONS, LEASE, LIMIT, start_paused=True)
    assert not late.observe(0, 0).paused  # the cluster lives: its pause is the row's


def test_a_release_that_fails_is_not_renewed(engines: list[sa.Engine]) -> None:
    a = _shard(engines[0], "a")
    _rounds([a])
    gone = min(a.held)
    broken = make_engine("sqlite:///nonexistent-dir/nothing.db")
    a.engine, engine = broken, a.engine
    with pytest.raises(sa.exc.OperationalError):
        a.release([gone])
    a.engine = engine
    assert gone not in a.observe(0, 0).held  # forgotten: it expires, not renewed


def test_a_changed_limit_is_published_however_small(engines: list[sa.Engine]) -> None:
    a, b = _shard(engines[0], "a"), _shard(engines[1], "b")
    _rounds([a, b])
    for _ in range(3):  # the first table, and its agreement
        a.observe(1, 0)
        b.observe(1, 0)
    a.limit = b.limit = LIMIT + 1
    for _ in range(3):
        a.observe(1, 0)
        b.observe(1, 0)
    newest = a.observe(1, 0).newest
    assert newest is not None and sum(newest.shares.values()) == LIMIT + 1


def test_a_keepalive_renews_without_moving_partitions(engines: list[sa.Engine]) -> None:
    a = _shard(engines[0], "a")
    _rounds([a])
    held = dict(a.held)
    b = _shard(engines[1], "b")
    b.observe(0, 0)  # a joins: a's plan would now give some up
    a.renew()
    assert a.held == held
    a.release([min(held)])
    b.take([min(held)])
    a.held[min(held)] = held[min(held)]  # as if a had not noticed
    with pytest.raises(LeaseLost):
        a.renew()
    assert min(held) not in a.held


def test_a_split_off_by_one_slot_is_published_once_it_lasts(engines: list[sa.Engine]) -> None:
    """17 and 15 hosts with work under a limit of 32: a table of 16 each is within one
    slot of the split, but a host's share would depend on its shard; once the split has
    lasted a few rounds it is published."""
    a = Coordinator(engines[0], "a", PARTITIONS, LEASE, 32)
    b = Coordinator(engines[1], "b", PARTITIONS, LEASE, 32)
    _rounds([a, b])
    newest = None
    for _ in range(12):
        for shard, demand in ((a, 16), (b, 16)):
            newest = shard.observe(demand, 0).newest
    assert newest is not None and newest.shares == {"a": 16, "b": 16}
    for _ in range(12):
        for shard, demand in ((a, 17), (b, 15)):
            newest = shard.observe(demand, 0).newest
    assert newest is not None and newest.shares == {"a": 17, "b": 15}
