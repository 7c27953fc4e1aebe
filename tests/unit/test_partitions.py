"""Dispatcher shards' pure core: host partitions, the plan of their owners, each shard's
moves, the split of the global limit into shares and the safe switch between two tables
of shares. Properties checked with Hypothesis on plain data, plus a few tables of cases."""

from __future__ import annotations

import math
from collections import Counter
from random import Random

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from scheduler.dispatcher.partitions import (
    drained,
    moves,
    outdated,
    partition_of,
    plan,
    shares,
    usable,
)

#: reproducible: the same examples on every run, nothing stored on disk
PROPERTIES = settings(max_examples=300, deadline=None, derandomize=True, database=None)

SHARD_IDS = [f"shard-{letter}" for letter in "abcdefgh"]
shard_ids = st.sampled_from(SHARD_IDS)
partition_counts = st.integers(min_value=1, max_value=40)


@st.composite
def situations(draw: st.DrawFn) -> tuple[int, list[str], dict[int, str]]:
    """Partitions, live shards (maybe repeated, in any order) and lease holders: live
    shards, departed ones, and partitions out of range (the count changed)."""
    partitions = draw(partition_counts)
    shards = draw(st.lists(shard_ids, max_size=10))
    holders = draw(
        st.dictionaries(
            st.integers(min_value=0, max_value=partitions + 3),
            st.sampled_from([*SHARD_IDS, "gone-1", "gone-2"]),
        )
    )
    return partitions, shards, holders


def holders_of(planned: dict[str, frozenset[int]]) -> dict[int, str]:
    return {partition: shard for shard, mine in planned.items() for partition in mine}


def moved(before: dict[int, str], after: dict[int, str]) -> set[int]:
    return {partition for partition, shard in after.items() if before.get(partition) != shard}


# partition_of


@pytest.mark.parametrize(
    ("host", "digest", "of_64", "of_7"),
    [
        ("host-1", 13767535389279248865, 33, 1),
        ("esx-07.dc1", 11443220216885311028, 52, 6),
        ("", 16476032584258269876, 52, 0),
        ("hôte-é", 16315304883473190049, 33, 0),
    ],
)
def test_partition_of_is_pinned(host: str, digest: int, of_64: int, of_7: int) -> None:
    """Known values: a change here moves every host to another shard on upgrade."""
    assert partition_of(host, 2**64) == digest
    assert (partition_of(host, 64), partition_of(host, 7)) == (of_64, of_7)


@given(host=st.text(), partitions=st.integers(min_value=1, max_value=10_000))
@PROPERTIES
def test_partition_of_is_in_range(host: str, partitions: int) -> None:
    assert 0 <= partition_of(host, partitions) < partitions
    assert partition_of(host, 1) == 0


def test_partition_of_refuses_no_partitions() -> None:
    with pytest.raises(ValueError):
        partition_of("host-1", 0)


# plan


def test_plan_cases() -> None:
    assert plan(4, [], {0: "a"}) == {}
    assert plan(3, ["a"], {}) == {"a": frozenset({0, 1, 2})}
    # b over quota keeps its lowest; the unheld and the departed's go to the fewest
    assert plan(6, ["b", "a"], {0: "b", 1: "b", 2: "b", 3: "b", 5: "gone"}) == {
        "a": frozenset({3, 4, 5}),
        "b": frozenset({0, 1, 2}),
    }
    # two shards over floor, one ceil quota: the tie goes by id
    assert plan(5, ["b", "a"], {0: "b", 1: "b", 2: "b", 3: "a", 4: "a"}) == {
        "a": frozenset({3, 4}),
        "b": frozenset({0, 1, 2}),
    }
    assert plan(3, ["b", "a", "c"], {0: "c", 1: "c", 2: "c"}) == {
        "a": frozenset({1}),
        "b": frozenset({2}),
        "c": frozenset({0}),
    }
    with pytest.raises(ValueError):
        plan(0, ["a"], {})


@given(situations())
@PROPERTIES
def test_plan_owns_each_partition_once_balanced_and_a_fixed_point(
    situation: tuple[int, list[str], dict[int, str]],
) -> None:
    partitions, shards, holders = situation
    planned = plan(partitions, shards, holders)
    assert set(planned) == set(shards)
    if not shards:
        return
    owned = Counter(p for mine in planned.values() for p in mine)
    assert set(owned) == set(range(partitions)) and set(owned.values()) == {1}
    sizes = [len(mine) for mine in planned.values()]
    assert max(sizes) - min(sizes) <= 1
    assert plan(partitions, shards, holders_of(planned)) == planned


@given(situations())
@PROPERTIES
def test_plan_moves_as_few_partitions_as_a_balanced_plan_can(
    situation: tuple[int, list[str], dict[int, str]],
) -> None:
    """Each live shard keeps min(held, quota); the ceil quotas go to shards holding more
    than floor where there are such, which is the most a balanced plan can keep."""
    partitions, shards, holders = situation
    live = set(shards)
    if not live:
        return
    planned = plan(partitions, shards, holders)
    floor, extra = divmod(partitions, len(live))
    held = {s: {p for p, h in holders.items() if h == s and p < partitions} for s in live}
    for shard in live:
        kept = len(held[shard] & planned[shard])
        assert kept == min(len(held[shard]), len(planned[shard]))
        if len(held[shard]) <= floor:
            assert held[shard] <= planned[shard]
    best = sum(min(len(mine), floor) for mine in held.values()) + min(
        extra, sum(len(mine) > floor for mine in held.values())
    )
    assert len(moved(holders, holders_of(planned))) == partitions - best


@given(situations(), shard_ids)
@PROPERTIES
def test_plan_joining_moves_at_most_a_fair_share(
    situation: tuple[int, list[str], dict[int, str]], joining: str
) -> None:
    partitions, shards, holders = situation
    if joining in shards:
        return
    before = holders_of(plan(partitions, shards, holders))
    after = holders_of(plan(partitions, [*shards, joining], before))
    assert len(moved(before, after)) <= math.ceil(partitions / (len(set(shards)) + 1))


@given(situations(), st.data())
@PROPERTIES
def test_plan_leaving_moves_only_the_leavers_partitions(
    situation: tuple[int, list[str], dict[int, str]], data: st.DataObject
) -> None:
    partitions, shards, holders = situation
    if len(set(shards)) < 2:
        return
    before = holders_of(plan(partitions, shards, holders))
    leaving = data.draw(st.sampled_from(sorted(set(shards))))
    after = holders_of(plan(partitions, [s for s in shards if s != leaving], before))
    assert moved(before, after) == {p for p, shard in before.items() if shard == leaving}


@given(situations(), st.randoms(use_true_random=False))
@PROPERTIES
def test_plan_does_not_depend_on_the_order_of_its_inputs(
    situation: tuple[int, list[str], dict[int, str]], random: Random
) -> None:
    partitions, shards, holders = situation
    shuffled_shards = random.sample(shards, len(shards))
    items = random.sample(sorted(holders.items()), len(holders))
    assert plan(partitions, shuffled_shards, dict(items)) == plan(partitions, shards, holders)


# moves


def test_moves_cases() -> None:
    planned = {"a": frozenset({0, 1}), "b": frozenset({2, 3})}
    holders = {0: "a", 2: "a", 3: "gone", 7: "a"}
    assert moves(planned, holders, "a") == (frozenset({1}), frozenset({2, 7}))
    # 3 is planned for b but still leased by the departed shard: b waits for it
    assert moves(planned, holders, "b") == (frozenset(), frozenset())
    assert moves(planned, holders, "c") == (frozenset(), frozenset())


@given(situations())
@PROPERTIES
def test_moves_of_every_shard_reach_the_plan(
    situation: tuple[int, list[str], dict[int, str]],
) -> None:
    """Releases first and departed shards' leases expired, then takes: the holders are
    the plan, no partition taken while another lease holds it."""
    partitions, shards, holders = situation
    planned = plan(partitions, shards, holders)
    live = set(shards)
    now = {p: s for p, s in holders.items() if s in live}
    for shard in live:
        take, release = moves(planned, holders, shard)
        assert take <= planned[shard] and not take & holders.keys()
        assert release == {p for p, s in holders.items() if s == shard} - planned[shard]
        for partition in release:
            del now[partition]
    for shard in live:
        take, _ = moves(planned, now, shard)
        assert not take & now.keys()
        now.update(dict.fromkeys(take, shard))
    assert now == holders_of(planned)


# shares

demands = st.dictionaries(shard_ids, st.integers(min_value=0, max_value=60), min_size=1)
limits = st.integers(min_value=0, max_value=200)


@pytest.mark.parametrize(
    ("limit", "demand", "expected"),
    [
        (10, {}, {}),
        (10, {"a": 0, "b": 0, "c": 0}, {"a": 4, "b": 3, "c": 3}),
        (10, {"a": 3, "b": 1, "c": 0}, {"a": 8, "b": 2, "c": 0}),
        (7, {"a": 1, "b": 1}, {"a": 4, "b": 3}),
        (3, {"a": 100, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1}),
        (5, {"a": 100, "b": 1, "c": 1}, {"a": 3, "b": 1, "c": 1}),
        (2, {"a": 5, "b": 1, "c": 1}, {"a": 2, "b": 0, "c": 0}),
        (0, {"a": 5, "b": 0}, {"a": 0, "b": 0}),
    ],
)
def test_shares_cases(limit: int, demand: dict[str, int], expected: dict[str, int]) -> None:
    assert shares(limit, demand) == expected


def test_shares_refuse_negatives() -> None:
    with pytest.raises(ValueError):
        shares(-1, {"a": 1})
    with pytest.raises(ValueError):
        shares(1, {"a": -1})


@given(limits, demands)
@PROPERTIES
def test_shares_sum_to_the_limit_and_follow_demand(limit: int, demand: dict[str, int]) -> None:
    split = shares(limit, demand)
    assert set(split) == set(demand) and sum(split.values()) == limit
    assert all(share >= 0 for share in split.values())
    assert split == shares(limit, dict(reversed(demand.items())))
    total = sum(demand.values())
    if not total:
        assert max(split.values()) - min(split.values()) <= 1
        return
    demanding = [s for s, d in demand.items() if d > 0]
    assert all(split[s] == 0 for s in demand if demand[s] == 0)
    if limit >= len(demanding):
        assert all(split[s] >= 1 for s in demanding)
    for one in demand:
        for other in demand:
            if demand[one] > demand[other]:
                assert split[one] >= split[other]
    raised = limit >= len(demanding) and any(limit * demand[s] < total for s in demanding)
    if not raised:
        # within 1 of the proportional quota limit * demand / total
        assert all(abs(split[s] * total - limit * demand[s]) < total for s in demand)


@given(
    hosts=st.integers(min_value=1, max_value=400),
    ready=st.randoms(use_true_random=False),
    shards=st.lists(shard_ids, min_size=1, max_size=8, unique=True),
    limit=st.integers(min_value=1, max_value=500),
)
@PROPERTIES
def test_a_hosts_share_of_slots_hardly_depends_on_its_shard(
    hosts: int, ready: Random, shards: list[str], limit: int
) -> None:
    """Hosts spread over 64 partitions, the partitions planned over the shards, a random
    part of the hosts ready, demand = ready hosts per shard. Bound tested: while no
    shard's quota is under 1 (none raised to 1), a ready host's expected share of slots,
    share / demand of its shard, is within 1 / demand of limit / ready hosts, so two hosts
    on shards with demands d1 and d2 differ by less than 1/d1 + 1/d2."""
    planned = plan(64, shards, {})
    owner = {p: shard for shard, mine in planned.items() for p in mine}
    names = [f"host-{i:04d}.dc{i % 3}" for i in range(hosts)]
    ready_hosts = [name for name in names if ready.random() < 0.6] or names[:1]
    demand = Counter(owner[partition_of(name, 64)] for name in ready_hosts)
    demand.update(dict.fromkeys(shards, 0))
    split = shares(limit, demand)
    total = len(ready_hosts)
    demanding = {shard: d for shard, d in demand.items() if d}
    if all(limit * d >= total for d in demanding.values()):
        event("no shard raised to 1")
        for shard, d in demanding.items():
            assert abs(split[shard] / d - limit / total) < 1 / d
    elif limit >= len(demanding):
        # the limit is tight: a shard raised to 1 gets 1 slot for its few hosts
        assert all(split[shard] >= 1 for shard in demanding)


# outdated: worth a switch


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        (None, {"a": 10}, True),  # none published yet
        ({"a": 5, "b": 5}, {"a": 5, "b": 5}, False),
        ({"a": 5, "b": 5}, {"a": 6, "b": 4}, False),  # rounding
        ({"a": 5, "b": 5}, {"a": 6, "b": 4}, "settled"),  # a difference that stays
        ({"a": 5, "b": 5}, {"a": 7, "b": 3}, True),
        ({"a": 5, "b": 5}, {"a": 5, "b": 4, "c": 1}, True),  # a shard joined
        ({"a": 5, "b": 4, "c": 1}, {"a": 5, "b": 5}, True),  # one left
    ],
)
def test_outdated_cases(
    current: dict[str, int] | None, target: dict[str, int], expected: bool | str
) -> None:
    if expected == "settled":
        assert outdated(current, target, settled=True) and not outdated(current, target)
    else:
        assert outdated(current, target) is expected


# usable


def test_usable_cases() -> None:
    old = {"a": 6, "b": 4}
    new = {"a": 3, "b": 5, "c": 2}
    # a shrinks to 3 but has 5 in flight: b and c wait within min(old, new)
    assert usable(old, new, {"a": 5, "b": 4, "c": 0}) == {"a": 3, "b": 4, "c": 0}
    assert not drained(old, new, {"a": 5, "b": 4, "c": 0})
    # a is within 3 now, but c has not reported since it saw the new table
    assert usable(old, new, {"a": 3, "b": 4}) == {"a": 3, "b": 4, "c": 0}
    assert usable(old, new, {"a": 3, "b": 4, "c": 0}) == new
    # a shard gone from the table must have drained before its slots are handed out
    assert usable(new, {"a": 5, "b": 5}, {"a": 3, "b": 4, "c": 1}) == {"a": 3, "b": 5}
    assert usable(new, {"a": 5, "b": 5}, {"a": 3, "b": 4, "c": 0}) == {"a": 5, "b": 5}


steps = st.lists(
    st.one_of(
        st.tuples(st.just("table"), demands),
        st.tuples(st.just("dispatch"), shard_ids, st.integers(min_value=1, max_value=30)),
        st.tuples(st.just("finish"), shard_ids, st.integers(min_value=1, max_value=30)),
        st.tuples(st.just("fill")),
    ),
    max_size=60,
)


@given(limit=st.integers(min_value=0, max_value=60), first=demands, steps=steps)
@PROPERTIES
def test_usable_keeps_the_sum_in_flight_within_the_limit(
    limit: int, first: dict[str, int], steps: list[tuple[object, ...]]
) -> None:
    """Tables of shares change at random while shards dispatch as much as ``usable``
    lets them (one shard, or all at once: "fill") and tasks finish: the sum in flight
    never exceeds the limit."""
    old = new = shares(limit, first)
    in_flight = dict.fromkeys(SHARD_IDS, 0)
    for step in steps:
        match step:
            case ("table", dict() as demand):
                new = shares(limit, demand)
            case ("dispatch", str() as shard, int() as count):
                room = usable(old, new, in_flight).get(shard, 0) - in_flight[shard]
                in_flight[shard] += max(0, min(count, room))
            case ("finish", str() as shard, int() as count):
                in_flight[shard] = max(0, in_flight[shard] - count)
            case ("fill",):
                for shard, cap in usable(old, new, in_flight).items():
                    in_flight[shard] = max(in_flight[shard], cap)
        if drained(old, new, in_flight):
            old = new
        assert sum(in_flight.values()) <= limit
