"""A dispatcher shard's tenure: which partitions its sessions serve, and when they move.

With ``DISPATCHER_PARTITIONS`` > 0 every dispatcher process is a shard: always active,
serving the hosts of the partitions it holds (:mod:`scheduler.dispatcher.shards` agrees
who holds which through leases in the ledger). The loop (:mod:`scheduler.dispatcher.loop`)
asks this module, between its broker sessions and within them:

- :meth:`ShardTenure.join`, before a session: a round; the partitions planned for
  another shard are released — only once the last session ended cleanly (its
  connection closed, so the broker put every head it held back in its queue) or long
  enough ago that the broker has noticed it is gone — and the free ones planned for this
  shard are taken. The session serves exactly what is held then.
- :meth:`ShardTenure.maybe_round`, in session, about every third of a lease (at once when
  the operator paused or resumed): renews every partition held, applies the cluster's
  pause, the live changes of limits any shard was told (:mod:`.controls`) and this
  shard's share of ``MAX_PARALLEL``; raises :class:`Rebalance` when the
  partitions should move (the session ends cleanly, and the next :meth:`join` moves
  them), :class:`~shared.errors.LeaseLost` when one was lost (taken over while this
  process stalled: its heads go back as the session ends).

So a key is never served by two shards: a partition is released only after the session
that served it ended, and taken by another only after that. Each session starts afresh
(:meth:`~scheduler.dispatcher.state.DispatcherState.start_afresh`: no key, no head) and
counts in flight its partitions' events, read from the ledger after the take — and still
those of a partition it gave up, until they end: they run on, and the shard that took it
counts them only from its take, so a running event is never left out of every shard's
count (the sum of the shards' counts may exceed what runs, never fall short of it). A
move costs each shard concerned one session restart; moves happen when a shard joins,
leaves or dies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from scheduler.dispatcher import controls
from scheduler.dispatcher.shards import Coordinator, Round
from scheduler.dispatcher.state import DispatcherState
from shared.errors import LeaseLost
from shared.fencing import PartitionFence
from shared.partition_leases import partition_of

log = logging.getLogger(__name__)

#: the broker's heartbeat interval the dispatcher's sessions ask for (seconds)
HEARTBEAT = 30
#: after a session that ended uncleanly, the broker may hold its heads until it notices
#: the connection gone (two missed heartbeats): its partitions are kept until then
BROKER_NOTICES = 2 * HEARTBEAT

EXCLUDED = "idle: a single dispatcher (DISPATCHER_PARTITIONS=0) holds the dispatcher lease"


class Rebalance(Exception):
    """The partitions this shard should serve changed: end the session (cleanly), then
    :meth:`ShardTenure.join` moves them."""


class ShardTenure:
    def __init__(
        self,
        coordinator: Coordinator,
        state: DispatcherState[Any],
        renewed: Callable[[float], None],
        target: controls.Target,
        on_round: Callable[[], None] | None = None,
    ) -> None:
        """``renewed(sent)``: called with the monotonic time a round that renewed every
        partition served was sent (the loop's lease watch); ``target``: what the live
        changes read from the log act on. ``on_round()``: called after each round in
        session that kept every partition (the loop counts the other shards' use of the
        named limits there: :meth:`.handover.Handover.refresh_named`); not between
        sessions, when nothing is dispatched."""
        self.on_round = on_round
        self.coordinator = coordinator
        self.partitions = coordinator.partitions
        self.name = coordinator.shard
        self.state = state
        self.renewed = renewed
        self.target = target
        #: the partitions the running (or next) session serves
        self.serving: frozenset[int] = frozenset()
        #: the last round (None: none yet)
        self.last: Round | None = None
        #: the cluster's pause as last read: a local change differs from it
        self._paused_seen = state.paused
        self._next_round = 0.0
        self._clean_end = True
        self._ended_at = 0.0

    # -- what the session serves ---------------------------------------------------
    def owns(self, host: str) -> bool:
        return partition_of(host, self.partitions) in self.serving

    def fence(self) -> PartitionFence:
        held = self.coordinator.held
        return PartitionFence(self.name, self.partitions, {p: held[p] for p in self.serving})

    # -- rounds ----------------------------------------------------------------------
    def round(self) -> Round:
        """Observe (renewing), then apply the cluster's pause and this shard's share."""
        paused = self.state.paused
        change = paused if paused != self._paused_seen else None
        sent = time.monotonic()
        seen = self.coordinator.observe(self.state.demand(), self.state.in_flight_count(), change)
        # no slot yet (a share table still to agree on): look again soon
        wait = (
            self.coordinator.seconds / 3 if seen.usable else min(1.0, self.coordinator.seconds / 3)
        )
        self._next_round = time.monotonic() + wait
        self.last = seen
        for told in seen.controls:
            controls.apply(self.target, told.section, told.body)
            log.info("applied the live change %d (%s)", told.version, told.section)
        if not seen.excluded:
            if seen.paused != self.state.paused:
                (self.state.pause if seen.paused else self.state.resume)()
                log.info("the shards are %s", "paused" if seen.paused else "resumed")
            self._paused_seen = seen.paused
            if self.serving <= seen.held.keys():
                self.renewed(sent)
        self.state.set_limits({"max_parallel": seen.usable})
        return seen

    def join(self) -> bool:
        """Between sessions: a round, then the moves it allows; False while a single
        dispatcher holds the dispatcher lease (no session)."""
        seen = self.round()
        if seen.excluded:
            self.serving = frozenset()
            return False
        quiet = self._clean_end or time.monotonic() - self._ended_at > BROKER_NOTICES
        if quiet and seen.release:
            self.coordinator.release(seen.release)
            log.info("released partitions %s", sorted(seen.release))
        got = self.coordinator.take(seen.take)
        if got:
            log.info("took partitions %s", sorted(got))
            self.renewed(time.monotonic())
        self.serving = frozenset(self.coordinator.held)
        return True

    def maybe_round(self) -> None:
        """In session: a round when due (or at once on a local pause or resume)."""
        if time.monotonic() < self._next_round and self.state.paused == self._paused_seen:
            return
        seen = self.round()
        if seen.excluded:
            raise LeaseLost("a single dispatcher took the dispatcher lease")
        lost = self.serving - seen.held.keys()
        if lost:
            raise LeaseLost(f"partitions {sorted(lost)} were taken over")
        if seen.release or seen.take:
            raise Rebalance(f"release {sorted(seen.release)}, take {sorted(seen.take)}")
        if self.on_round is not None:
            self.on_round()

    def keepalive(self) -> None:
        """Between the rounds of a long resync: renew, nothing else."""
        sent = time.monotonic()
        self.coordinator.renew()
        self.renewed(sent)

    # -- the end of a session, and of the shard -------------------------------------
    def session_ended(self, clean: bool) -> None:
        self._clean_end = clean
        self._ended_at = time.monotonic()
        self.state.start_afresh()
        self.state.set_limits({"max_parallel": 0 if self.last is None else self.last.usable})

    def leave(self) -> None:
        """A clean stop, after the last session's connection closed."""
        if self._clean_end:
            self.coordinator.leave()
        # else its partitions expire within a lease, as a dead shard's do

    def view(self) -> dict[str, Any]:
        """This shard, for /stats."""
        seen = self.last
        return {
            "name": self.name,
            "partitions": self.partitions,
            "serving": sorted(self.serving),
            "held": dict(sorted(self.coordinator.held.items())),
            "planned": [] if seen is None else sorted(seen.planned),
            "usable": None if seen is None else seen.usable,
            "limit": self.coordinator.limit,
            "share_version": None if seen is None or seen.newest is None else seen.newest.version,
            "agreed_version": None if seen is None or seen.agreed is None else seen.agreed.version,
            "live_shards": [] if seen is None else [row.shard for row in seen.live],
            "excluded": bool(seen and seen.excluded),
        }
