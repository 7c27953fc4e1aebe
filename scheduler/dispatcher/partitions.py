"""Dispatcher shards: which shard owns which hosts, and how many slots each may use, pure.

Several active dispatchers (shards) split the hosts between them. A host belongs to one
partition (:func:`partition_of`, the same on every machine), so a VM's keys always go with
its host's. The ledger holds one lease per partition; every shard computes the same
:func:`plan` from the live shards and the current holders, then :func:`moves` says which
free partitions it takes and which of its own it gives up. Nothing here reads the ledger
or the clock: the caller passes what it read.

The global limit on tasks in flight is split into one share per shard by demand
(:func:`shares`: a shard's demand is the number of its hosts with ready work), so a host
gets about the same slots whichever shard owns it. When the table of shares changes,
shards see it at different times: :func:`usable` says what each may use meanwhile so the
sum in flight never goes over the limit, given one agreed sequence of tables (the ledger
keeps it: :mod:`shared.share_tables`) and a new one only once it is worth a switch
(:func:`outdated`).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from shared.partition_leases import partition_of

__all__ = ["Plan", "drained", "moves", "outdated", "partition_of", "plan", "shares", "usable"]

#: a plan: the partitions each live shard should hold
Plan = dict[str, frozenset[int]]


def plan(partitions: int, shards: Sequence[str], holders: Mapping[int, str]) -> Plan:
    """The owner every partition should have, among the live ``shards``.

    ``holders`` maps a partition to the shard whose lease holds it (a partition missing is
    unheld; one outside ``range(partitions)`` is ignored). The result depends only on the
    set of shards and on ``holders``, not on their order, so every shard computes the same
    plan from the same reads.

    Balanced: with P partitions and S shards, each shard is planned floor(P/S) or
    ceil(P/S). The ceil quotas go first to the shards holding more than floor, then by
    shard id. Minimal movement: a live shard keeps what it holds up to its quota (its
    lowest partitions); only the rest (unheld, held by a shard not live, or over a
    quota) moves, lowest partition first, each to the shard below quota with the fewest
    so far (ties by id). So a plan is its own fixed point, adding a shard moves at most
    ceil(P/(S+1)) partitions, and removing one moves only the ones it held. No shards: an
    empty plan.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    live = sorted(set(shards))
    if not live:
        return {}
    held: dict[str, list[int]] = {shard: [] for shard in live}
    for partition in range(partitions):
        holder = holders.get(partition)
        if holder in held:
            held[holder].append(partition)  # ascending: range order

    floor, extra = divmod(partitions, len(live))
    by_claim = sorted(live, key=lambda shard: (len(held[shard]) <= floor, shard))
    quota = {shard: floor + (rank < extra) for rank, shard in enumerate(by_claim)}

    owned = {shard: held[shard][: quota[shard]] for shard in live}
    kept = {partition for mine in owned.values() for partition in mine}
    below = [(len(owned[shard]), shard) for shard in live if len(owned[shard]) < quota[shard]]
    heapq.heapify(below)
    for partition in range(partitions):
        if partition in kept:
            continue
        count, shard = heapq.heappop(below)
        owned[shard].append(partition)
        if count + 1 < quota[shard]:
            heapq.heappush(below, (count + 1, shard))
    return {shard: frozenset(mine) for shard, mine in owned.items()}


def moves(
    planned: Mapping[str, frozenset[int]], holders: Mapping[int, str], me: str
) -> tuple[frozenset[int], frozenset[int]]:
    """What shard ``me`` does about a plan: (take, release). Take: the partitions planned
    for it that no lease holds (one still held elsewhere is taken once that lease is
    released or expires). Release: the partitions it holds that are planned elsewhere, or
    not planned at all."""
    mine = planned.get(me, frozenset())
    take = frozenset(p for p in mine if p not in holders)
    release = frozenset(p for p, holder in holders.items() if holder == me and p not in mine)
    return take, release


def shares(limit: int, demand: Mapping[str, int]) -> dict[str, int]:
    """Split ``limit`` slots across the shards in ``demand`` (every live shard, its count of
    hosts with ready work).

    The shares sum to exactly ``limit``. Each is the largest-remainder rounding of its
    proportional quota ``limit * demand / total`` (remainders broken by shard id), except
    that while ``limit`` is at least the number of shards with demand each of those gets
    at least 1: a shard whose quota is under 1 is set to 1 and the rest is split again
    among the others. A shard with more demand never gets fewer slots; one with none gets
    0 while another has some. With no demand anywhere the limit is split evenly, so a
    shard whose work appears has slots before the next split.
    """
    if limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    if any(count < 0 for count in demand.values()):
        raise ValueError(f"demand must not be negative: {dict(demand)}")
    if not demand:
        return {}
    weights = dict(demand) if any(demand.values()) else dict.fromkeys(demand, 1)
    result = dict.fromkeys(demand, 0)
    rest = {shard: weight for shard, weight in weights.items() if weight > 0}
    if limit >= len(rest):
        # at least 1 each: set to 1 every shard whose quota of what is left is under 1,
        # until none is (the others' quotas then are at least 1 each)
        while True:
            left, total = limit - sum(result.values()), sum(rest.values())
            under = [shard for shard, weight in rest.items() if left * weight < total]
            if not under:
                break
            for shard in under:
                result[shard] = 1
                del rest[shard]
    left = limit - sum(result.values())
    result.update(_largest_remainder(left, rest))
    return result


def _largest_remainder(limit: int, weights: Mapping[str, int]) -> dict[str, int]:
    """``limit`` split in proportion to ``weights`` (all > 0): each gets the floor of its
    quota, then one more each in order of the largest fraction left, ties by id."""
    total = sum(weights.values())
    if not total:
        return {}
    result = {shard: limit * weight // total for shard, weight in weights.items()}
    # fraction left, as the numerator over total: larger first, then shard id
    order = sorted(weights, key=lambda shard: (-(limit * weights[shard] % total), shard))
    for shard in order[: limit - sum(result.values())]:
        result[shard] += 1
    return result


def outdated(
    current: Mapping[str, int] | None, target: Mapping[str, int], settled: bool = False
) -> bool:
    """Whether the published share table ``current`` (None: none yet) should give way to
    ``target``, the split of today's demand: it names other shards, or a share is off by
    more than one slot — or by one, once ``target`` has ``settled`` (the caller saw the
    same target over several rounds). A difference of one that comes and goes is the
    rounding of demand moving, not worth a switch (each switch holds every shard to
    min(old, new) for a while); one that stays is a host's share depending on its shard
    (one slot of a share of 16 is 6 %: ``make bench BENCH=shards``)."""
    if current is None or set(current) != set(target):
        return True
    worst = max((abs(current[shard] - share) for shard, share in target.items()), default=0)
    return worst > 1 or (worst == 1 and settled)


def drained(old: Mapping[str, int], new: Mapping[str, int], in_flight: Mapping[str, int]) -> bool:
    """Whether every shard of either table has no more in flight than its share in
    ``new`` (0 for a shard gone from it). A shard missing from ``in_flight`` has not
    reported since it saw ``new``, and counts as over."""
    return all(
        shard in in_flight and in_flight[shard] <= new.get(shard, 0) for shard in {*old, *new}
    )


def usable(
    old: Mapping[str, int], new: Mapping[str, int], in_flight: Mapping[str, int]
) -> dict[str, int]:
    """The slots each shard of ``new`` may use while the shares change from ``old`` (the
    last table every shard used whole) to ``new``. A shard missing from a table has a
    share of 0 in it.

    Until :func:`drained`, each shard may use min(old, new); after, its new share; the
    caller then takes ``new`` as the next ``old``. If ``new`` changes again before it is
    drained, the next call keeps the same ``old``. ``in_flight`` must be each shard's count
    from after it saw ``new`` (a count from before could still grow to the old share), and
    for a shard gone from ``new`` what is still counted as its own.

    Why the sum in flight stays within the limit (sum(old) == sum(new) == limit), given
    no shard dispatches beyond what this gives it: before the switch a shard dispatches
    only below min(old, new), so each stays at or below its old share and the sum at or
    below sum(old); the switch comes only when every shard is within its new share, so the
    sum is then at most sum(new), and after it each shard stays within its new share.
    """
    if drained(old, new, in_flight):
        return dict(new)
    return {shard: min(old.get(shard, 0), share) for shard, share in new.items()}
