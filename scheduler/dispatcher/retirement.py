"""Retiring idle keys: a key with no work for ``KEY_IDLE_SECONDS`` loses its queue and
its place in the mapping, and its next event brings both back. Live queues then follow
the keys with work, not every key ever seen (``make bench BENCH=keys``).

A round takes the keys the dispatcher finds idle (:mod:`scheduler.dispatcher.idle`: no
event held, none of its VM's in flight, none dispatched for that long) and hands them to
the ledger (:meth:`shared.mapping_store.MappingStore.retire_keys`), which keeps those no
event waits for locked while this module cancels their consumers and deletes their
queues — ``if-empty`` on classic queues; a quorum queue before RabbitMQ 4.0 cannot be
deleted that way, and the ledger's lock is what makes deleting it safe — then deletes
their rows under one mapping version, announced on the mapping fanout. A key whose
queue was not deleted (not empty) stays, and is consumed again.

A dispatcher shard only finds idle the keys of its own partitions, but it may have lost
one while it stalled: its round is fenced (``fence``, read again every round as its
partitions change), so such a round deletes no queue — another shard may be consuming
it — and ends with :class:`~shared.errors.LeaseLost`, having stopped no consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import kombu

from scheduler.dispatcher.confirms import ConfirmingProducer
from scheduler.dispatcher.mapping import MappingFollower
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared.fencing import Fence
from shared.models import Key, MappingDelta
from shared.store import Store

log = logging.getLogger(__name__)

#: keys looked at per round: one ledger transaction, which holds the mapping's lock
#: while their queues are deleted
RETIRE_BATCH = 200
#: seconds between rounds once a round found fewer than a batch
RETIRE_EVERY = 1.0


class Retirement:
    def __init__(
        self,
        settings: DispatcherSettings,
        store: Store,
        state: DispatcherState[kombu.Message],
        mapping: MappingFollower,
        fence: Callable[[], Fence | None] = lambda: None,
    ) -> None:
        """``fence``: the fence of this round's ledger transaction, asked every round
        (a shard's :class:`~shared.fencing.PartitionFence` of the partitions it holds
        now; None, a single dispatcher's: unfenced)."""
        self.idle_for = settings.key_idle_seconds
        self.if_empty = settings.queue_type == "classic"
        self.topology = settings.topology
        self.store = store
        self.state = state
        self.mapping = mapping
        self.fence = fence
        self.retired_total = 0
        self._next = 0.0
        self._stopped: list[Key] = []

    def maybe_retire(self, producer: ConfirmingProducer) -> None:
        """One round when one is due (KEY_IDLE_SECONDS > 0); a ledger error propagates,
        with every key of the round consumed again. So does the fence's
        :class:`~shared.errors.LeaseLost`, raised before any consumer was stopped
        (``_stopped`` is still empty: there is nothing to consume again)."""
        if not self.idle_for:
            return
        now = time.time()  # the clock of the dispatch log, which uses keys too
        if now < self._next:
            return
        found = self.state.idle_keys(now, self.idle_for, RETIRE_BATCH)
        full = len(found) == RETIRE_BATCH
        self._next = now if full else now + min(RETIRE_EVERY, self.idle_for / 4)
        if not found:
            return
        self._stopped = []
        try:
            done = self.store.retire_keys(
                [Key.model_construct(host=h, vm=v, policy=p) for h, v, p in found],
                self._delete_queues,
                self.fence(),
            )
        except BaseException:
            self.mapping.consume_keys(self._stopped, now)  # their queues declared again
            raise
        retired = [_tuple(k) for k in done.retired]
        for item in self.state.retire_keys(retired):  # a stray delivery, none normally
            item.handle.requeue()
        self.mapping.forget_keys([_tuple(k) for k in done.absent])
        kept = {_tuple(k) for k in done.kept}
        self.mapping.consume_keys([k for k in self._stopped if _tuple(k) in kept], now)
        self.state.keep_keys(list(kept), now)
        if done.delta is not None:
            self.mapping.own_delta(done.delta)
            _announce(producer, self.topology.mapping_exchange.name, done.delta)
        self.retired_total += len(retired)
        log.info(
            "retired %d idle keys (%d kept, %d gone already)",
            len(retired),
            len(kept),
            len(done.absent),
        )

    def _delete_queues(self, keys: list[Key]) -> list[Key]:
        """Inside the ledger's transaction: stop consuming the keys' queues and delete
        them; returns the keys whose queue is gone."""
        self._stopped = keys
        self.mapping.stop_consuming([_tuple(k) for k in keys])
        by_name = {self.topology.event_queue_name(k): k for k in keys}
        deleted = self.mapping.delete_queues(list(by_name), self.if_empty)
        return [by_name[name] for name in deleted]


def _tuple(key: Key) -> tuple[str, str, str]:
    return key.host, key.vm, key.policy


def _announce(producer: ConfirmingProducer, exchange: str, delta: MappingDelta) -> None:
    """Publish the change to the other dispatchers (a standby follows it); one lost is
    found at their next resync."""
    producer.publish_all(
        [
            lambda p: p.publish(
                delta.model_dump_json(),
                exchange=exchange,
                routing_key="",
                content_type="application/json",
                delivery_mode=2,
            )
        ]
    )
