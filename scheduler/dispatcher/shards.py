"""A dispatcher shard's membership and partitions: the adapter between the pure plan
(:mod:`scheduler.dispatcher.partitions`) and the ledger's partition leases
(:mod:`shared.partition_leases`), used by the dispatcher's loop in shard mode
(``DISPATCHER_PARTITIONS`` > 0, :mod:`scheduler.dispatcher.tenure`).

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

Shards and a single dispatcher (``DISPATCHER_PARTITIONS=0``) never dispatch at once: every
shard co-holds the single dispatcher's lease, ``dispatcher``, under the holder
:data:`MARKER` and renews it in each round, so a single dispatcher started beside them
waits as a standby, and a shard that finds a single dispatcher holding it takes nothing
(:attr:`Round.excluded`). That row's ``paused`` is the cluster's pause: a shard whose
operator paused or resumed it writes it in its next round, and every shard obeys what it
reads there (the elasticity worker and the producer read it as the dispatcher's).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from scheduler.dispatcher import partitions as pure
from shared import control_log
from shared import partition_leases as leases
from shared import share_tables as tables
from shared.clock import NOW
from shared.db import leases as lease_rows
from shared.db import write_lock_first
from shared.errors import LeaseLost
from shared.lease import DISPATCHER, Lease, holder_paused
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
    #: a single dispatcher holds the dispatcher lease: this shard holds nothing and
    #: must not dispatch
    excluded: bool = False
    #: whether the cluster is paused (the dispatcher lease's row, after this round)
    paused: bool = False
    #: live changes of limits, classes and weights newer than the last round's, to apply
    #: in this order (:mod:`shared.control_log`)
    controls: tuple[control_log.Control, ...] = ()


#: the holder under which every shard co-holds the ``dispatcher`` lease
MARKER = "shards"
#: rounds the same split of demand must last before a difference of one slot from the
#: published table is worth a switch (:func:`~scheduler.dispatcher.partitions.outdated`)
STEADY_ROUNDS = 3


class Coordinator:
    def __init__(
        self,
        engine: sa.Engine,
        shard: str,
        partitions: int,
        seconds: float,
        limit: int,
        start_paused: bool = False,
    ) -> None:
        self.engine = engine
        self.shard = shard
        self.partitions = partitions
        self.seconds = seconds
        self.limit = limit
        #: the pause a shard writes when it finds no shard alive (START_PAUSED)
        self.start_paused = start_paused
        self.held: dict[int, int] = {}
        #: the last version of the log of live changes read
        self.controls_seen = 0
        #: the split of demand this shard last computed, and for how many rounds since
        self._target: dict[str, int] = {}
        self._steady = 0
        #: where this shard's admin API answers, said in its heartbeat
        self.url: str | None = None
        self.marker = Lease(DISPATCHER, MARKER, seconds)
        with engine.begin() as conn:
            leases.ensure(conn, range(partitions))
            self.marker.create(conn)

    def observe(self, demand: int, in_flight: int, paused: bool | None = None) -> Round:
        """One round: read the newest share table, heartbeat with ``in_flight`` reported
        at it, renew, read; then the plan, this shard's moves, and the slots it may use
        (``in_flight`` included) until its next round. The caller must not dispatch
        beyond them: the limit holds only if every shard keeps to its own. ``paused``:
        the operator paused (True) or resumed (False) this shard since its last round,
        which pauses or resumes them all (None: no change)."""
        everyone = range(self.partitions)
        with self.engine.begin() as conn:
            write_lock_first(conn)  # SQLite: every read below of one state
            if not self._mark(conn, paused):
                self.held = {}
                none: frozenset[int] = frozenset()
                return Round({}, none, none, none, (), None, None, 0, None, excluded=True)
            cluster_paused = holder_paused(conn, DISPATCHER)  # the row just renewed
            controls = tuple(control_log.since(conn, self.controls_seen))
            newest = tables.latest(conn)
            seen = None if newest is None else newest.version
            leases.heartbeat(
                conn, self.shard, self.seconds, demand, in_flight, len(self.held), seen, self.url
            )
            self.held = leases.renew_all(conn, self.shard, self.held, self.seconds)
            live = tuple(leases.live_shards(conn))
            holders = leases.holders(conn, everyone)
            agreed = tables.agreed_as_read(conn, newest, live, holders, everyone)
            reports = {} if newest is None else tables.reports(conn, newest.version)
            published = self._publish(conn, newest, live)
        if controls:
            self.controls_seen = controls[-1].version
        planned = pure.plan(self.partitions, [row.shard for row in live], holders)
        take, release = pure.moves(planned, holders, self.shard)
        usable = pure.usable(
            {} if agreed is None else agreed.shares,
            {} if newest is None else newest.shares,
            reports,
        ).get(self.shard, 0)
        mine = planned.get(self.shard, frozenset())
        return Round(
            dict(self.held),
            mine,
            take,
            release,
            live,
            newest,
            agreed,
            usable,
            published,
            paused=cluster_paused,
            controls=controls,
        )

    def _mark(self, conn: sa.Connection, paused: bool | None) -> bool:
        """Renew the shards' hold of the dispatcher lease (with ``paused`` when given; a
        shard taking it from expired writes :attr:`start_paused`); False: a single
        dispatcher holds it. The first shard of a cluster resets the log of live changes
        too."""
        alive = conn.execute(
            sa.select(lease_rows.c.holder).where(
                lease_rows.c.name == DISPATCHER, lease_rows.c.expires_at >= NOW
            )
        ).scalar()
        if alive is None:  # the first shard of a cluster: its settings hold again
            control_log.reset(conn)
            if paused is None:
                paused = self.start_paused
        return self.marker.take(conn, paused)

    def renew(self) -> None:
        """Renew the partitions held and the dispatcher lease, nothing else (between the
        rounds of a long resync); :class:`LeaseLost` if one was lost."""
        with self.engine.begin() as conn:
            write_lock_first(conn)
            kept = leases.renew_all(conn, self.shard, self.held, self.seconds)
            marked = self.marker.take(conn)
        if not marked or kept.keys() != self.held.keys():
            lost = sorted(self.held.keys() - kept.keys())
            self.held = kept
            raise LeaseLost(f"shard {self.shard} lost partitions {lost} or the dispatcher lease")

    def _publish(
        self, conn: sa.Connection, newest: ShareTable | None, live: tuple[ShardRow, ...]
    ) -> int | None:
        """The next share table, if this shard is the lowest live one and the split of
        today's demand is worth a switch; :func:`shared.share_tables.publish` adds it only
        once the newest is agreed. The version newer than ``newest`` after it, or None."""
        if not live or live[0].shard != self.shard:
            return None
        target = pure.shares(self.limit, {row.shard: row.demand for row in live})
        self._steady = self._steady + 1 if target == self._target else 0
        self._target = target
        settled = self._steady >= STEADY_ROUNDS
        # outdated() forgives rounding; a changed limit is published however small
        same_limit = newest is not None and sum(newest.shares.values()) == self.limit
        current = None if newest is None else newest.shares
        if same_limit and not pure.outdated(current, target, settled):
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
        """Give ``partitions`` up at once; call only once nothing of them is served.
        They are forgotten first: one whose release fails is not renewed again, and
        expires within a lease."""
        gone = [p for p in partitions if p in self.held]
        if not gone:
            return  # a round with nothing to give up opens no transaction
        for partition in gone:
            del self.held[partition]
        with self.engine.begin() as conn:
            leases.release(conn, self.shard, gone)

    def leave(self) -> None:
        """A clean stop: every partition released, and the shard's row gone."""
        self.release(list(self.held))
        with self.engine.begin() as conn:
            leases.leave(conn, self.shard)
