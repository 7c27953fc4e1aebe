"""A dispatcher shard's membership and partitions: the adapter between the pure plan
(:mod:`scheduler.dispatcher.partitions`) and the ledger's partition leases
(:mod:`shared.partition_leases`). Not used by the dispatcher yet: the next step wires
it into :class:`~scheduler.dispatcher.loop.DispatcherLoop` (issue 24).

Each round (:meth:`Coordinator.observe`, about every third of a lease) a shard, in one
transaction, says it is alive with its demand and its actions in flight, renews the
partition leases it holds, and reads the live shards and every partition's holder. From
those it computes the same plan as every other shard, and learns which partitions to
give up (planned for another shard) and which free ones to take. It gives one up only
after its caller stopped serving it (:meth:`release`: its heads back in their queues),
and takes free ones in ascending order (:meth:`take`), so two shards never deadlock on
PostgreSQL. A partition held by a shard that died is taken once its lease has expired,
by the ledger's clock, with a larger fencing token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from scheduler.dispatcher import partitions as pure
from shared import partition_leases as leases
from shared.partition_leases import ShardRow


@dataclass(frozen=True)
class Round:
    """What one round saw and decided for this shard."""

    #: partition -> fencing token, of the leases this shard still holds
    held: dict[int, int]
    #: the partitions the plan gives this shard
    planned: frozenset[int]
    #: free partitions planned for this shard: :meth:`Coordinator.take` them
    take: frozenset[int]
    #: partitions it holds that are planned for another: stop serving them, then
    #: :meth:`Coordinator.release` them
    release: frozenset[int]
    #: the live shards, by name
    live: tuple[ShardRow, ...]
    #: each live shard's share of the global limit, by demand
    shares: dict[str, int]


class Coordinator:
    def __init__(
        self, engine: sa.Engine, shard: str, partitions: int, seconds: float, limit: int
    ) -> None:
        self.engine = engine
        self.shard = shard
        self.partitions = partitions
        self.seconds = seconds
        self.limit = limit
        self.held: dict[int, int] = {}
        with engine.begin() as conn:
            leases.ensure(conn, range(partitions))

    def observe(self, demand: int, in_flight: int) -> Round:
        """One round: heartbeat, renew, read; then the plan and this shard's moves."""
        with self.engine.begin() as conn:
            leases.heartbeat(conn, self.shard, self.seconds, demand, in_flight, len(self.held))
            self.held = leases.renew_all(conn, self.shard, self.held, self.seconds)
            live = tuple(leases.live_shards(conn))
            holders = leases.holders(conn, range(self.partitions))
        planned = pure.plan(self.partitions, [row.shard for row in live], holders)
        take, release = pure.moves(planned, holders, self.shard)
        shares = pure.shares(self.limit, {row.shard: row.demand for row in live})
        mine = planned.get(self.shard, frozenset())
        return Round(dict(self.held), mine, take, release, live, shares)

    def take(self, partitions: Iterable[int]) -> dict[int, int]:
        """Take the free ``partitions`` (ascending); the ones taken, with their tokens."""
        got: dict[int, int] = {}
        with self.engine.begin() as conn:
            for partition in sorted(partitions):
                token = leases.take(conn, self.shard, partition, self.seconds)
                if token is not None:
                    got[partition] = token
        self.held.update(got)
        return got

    def release(self, partitions: Iterable[int]) -> None:
        """Give ``partitions`` up at once; call only once nothing of them is served."""
        gone = [p for p in partitions if p in self.held]
        with self.engine.begin() as conn:
            leases.release(conn, self.shard, gone)
        for partition in gone:
            del self.held[partition]

    def leave(self) -> None:
        """A clean stop: every partition released, and the shard's row gone."""
        self.release(list(self.held))
        with self.engine.begin() as conn:
            leases.leave(conn, self.shard)
