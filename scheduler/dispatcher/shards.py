"""A dispatcher shard's membership and partitions: the adapter between the pure plan
(:mod:`scheduler.dispatcher.partitions`) and the ledger's partition leases
(:mod:`shared.partition_leases`). Not used by the dispatcher yet: the next step wires
it into :class:`~scheduler.dispatcher.loop.DispatcherLoop` (issue 24).

Each round (:meth:`Coordinator.observe`, about every third of a lease) a shard, in one
transaction, reads the newest share table (:mod:`shared.share_tables`), says it is alive
with its demand and its actions in flight counted at that version, renews the partition
leases it holds, and reads the live shards and every partition's holder. From those it
computes the same plan as every other shard, and learns which partitions to give up
(planned for another shard) and which free ones to take. It gives one up only after its
caller stopped serving it (:meth:`release`: its heads back in their queues), and takes
free ones in ascending order (:meth:`take`), so two shards never deadlock on PostgreSQL.
A partition held by a shard that died is taken once its lease has expired, by the
ledger's clock, with a larger fencing token.

The round also says how many slots of the global limit the shard may use:
:func:`~scheduler.dispatcher.partitions.usable` between the last agreed table and the
newest, with the reports at the newest. The live shard with the lowest name publishes
the next table when the newest is agreed and the split of today's demand differs from it
by more than rounding (:func:`~scheduler.dispatcher.partitions.outdated`); any shard may,
as two may believe themselves the lowest for a moment: the version's primary key makes
one win.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from scheduler.dispatcher import partitions as pure
from shared import partition_leases as leases
from shared import share_tables as tables
from shared.db import write_lock_first
from shared.partition_leases import ShardRow
from shared.share_tables import ShareTable


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
    #: the newest share table, read and reported at in this round (None: none yet)
    newest: ShareTable | None
    #: the last agreed table, the ``old`` of a switch in progress (None: none yet)
    agreed: ShareTable | None
    #: the slots of the global limit this shard may use until its next round
    usable: int
    #: the version this round published (or, racing another publisher, found newer
    #: than ``newest``), obeyed from the next round; None: none
    published: int | None


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
        """One round: read the newest share table, heartbeat with ``in_flight`` reported
        at it, renew, read; then the plan, this shard's moves, and the slots it may use
        (``in_flight`` included) until its next round. The caller must not dispatch
        beyond them: the limit holds only if every shard keeps to its own."""
        everyone = range(self.partitions)
        with self.engine.begin() as conn:
            write_lock_first(conn)  # SQLite: every read below of one state
            newest = tables.latest(conn)
            seen = None if newest is None else newest.version
            leases.heartbeat(
                conn, self.shard, self.seconds, demand, in_flight, len(self.held), seen
            )
            self.held = leases.renew_all(conn, self.shard, self.held, self.seconds)
            live = tuple(leases.live_shards(conn))
            holders = leases.holders(conn, everyone)
            agreed = tables.agreed_as_read(conn, newest, live, holders, everyone)
            reports = {} if newest is None else tables.reports(conn, newest.version)
            published = self._publish(conn, newest, live)
        planned = pure.plan(self.partitions, [row.shard for row in live], holders)
        take, release = pure.moves(planned, holders, self.shard)
        usable = pure.usable(
            {} if agreed is None else agreed.shares,
            {} if newest is None else newest.shares,
            reports,
        ).get(self.shard, 0)
        mine = planned.get(self.shard, frozenset())
        return Round(dict(self.held), mine, take, release, live, newest, agreed, usable, published)

    def _publish(
        self, conn: sa.Connection, newest: ShareTable | None, live: tuple[ShardRow, ...]
    ) -> int | None:
        """The next share table, if this shard is the lowest live one and the split of
        today's demand is worth a switch; :func:`shared.share_tables.publish` adds it only
        once the newest is agreed. The version newer than ``newest`` after it, or None."""
        if not live or live[0].shard != self.shard:
            return None
        target = pure.shares(self.limit, {row.shard: row.demand for row in live})
        if not pure.outdated(None if newest is None else newest.shares, target):
            return None
        version = tables.publish(conn, target, range(self.partitions))
        return version if newest is None or version > newest.version else None

    def take(self, partitions: Iterable[int]) -> dict[int, int]:
        """Take the free ``partitions`` (ascending); the ones taken, with their tokens.
        The shard's report is void once it took any (:func:`shared.share_tables.void_report`):
        the events in flight for their hosts are its count from now on, and its next round
        reports them."""
        got: dict[int, int] = {}
        with self.engine.begin() as conn:
            for partition in sorted(partitions):
                token = leases.take(conn, self.shard, partition, self.seconds)
                if token is not None:
                    got[partition] = token
            if got:
                tables.void_report(conn, self.shard)
        self.held.update(got)
        return got

    def release(self, partitions: Iterable[int]) -> None:
        """Give ``partitions`` up at once; call only once nothing of them is served."""
        gone = [p for p in partitions if p in self.held]
        if not gone:
            return  # a round with nothing to give up opens no transaction
        with self.engine.begin() as conn:
            leases.release(conn, self.shard, gone)
        for partition in gone:
            del self.held[partition]

    def leave(self) -> None:
        """A clean stop: every partition released, and the shard's row gone."""
        self.release(list(self.held))
        with self.engine.begin() as conn:
            leases.leave(conn, self.shard)
