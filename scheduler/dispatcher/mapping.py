"""Following the mapping: which event queues the dispatcher consumes, and what the
dispatcher knows of hosts, VMs and keys.

A snapshot from the ledger at connect (and whenever a delta is missed), then the deltas
from the mapping fanout in version order; a periodic check of the ledger's version
catches a delta lost with no later one to reveal the gap.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import kombu
from kombu.message import Message

from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared.kombu_topology import queue
from shared.models import Key, MappingDelta
from shared.store import Store

log = logging.getLogger(__name__)


#: queues consumed per round of a resync: each round ends with a round trip, then the
#: caller's keepalive (the dispatcher lease's renewal), however many keys there are
RESYNC_CHUNK = 2000


class MappingFollower:
    def __init__(
        self,
        settings: DispatcherSettings,
        store: Store,
        state: DispatcherState[Message],
        keepalive: Callable[[], None] | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.settings = settings
        #: called between rounds of a long resync (the lease must not lapse meanwhile)
        self.keepalive = keepalive
        #: the hosts whose keys this dispatcher serves (a shard's); None: every host
        self.owns = owns
        self.topology = settings.topology
        self.store = store
        self.state = state
        self.version = 0
        self._queues: dict[str, tuple[str, str, str]] = {}  # consumed queue -> key
        self._events: kombu.Consumer | None = None
        self._next_check = 0.0
        #: the ledger's version at the last check, while it was ahead of ours
        self._seen_ahead = 0
        #: keys this dispatcher retired at a version it has not reached yet: an older
        #: delta adding one of them again does not consume its (deleted) queue
        self._retired_at: dict[tuple[str, str, str], int] = {}

    @property
    def queue_count(self) -> int:
        return len(self._queues)

    def attach(self, events: kombu.Consumer) -> None:
        """A session began: event queues are consumed through ``events``."""
        self._events = events

    def detach(self) -> None:
        """The session ended: its consumer and queues are gone."""
        self._events = None
        self._queues.clear()

    def resync(self) -> None:
        """Take the whole mapping from the ledger and consume every queue in it (and no
        other: a VM removed or a key retired meanwhile is forgotten)."""
        snapshot = self.store.snapshot()
        if self.owns is not None:
            owns = self.owns
            snapshot = snapshot.model_copy(
                update={"hosts": {h: v for h, v in snapshot.hosts.items() if owns(h)}}
            )
        self._retired_at.clear()
        self.state.load_mapping(snapshot, time.time())
        live_vms = {(h, v) for h, hv in snapshot.hosts.items() for v in hv.vms}
        for host, vm in {(h, v) for h, v, _ in self._queues.values()} - live_vms:
            self._remove_vm(host, vm)
        live = dict.fromkeys(  # in mapping order
            (h, v, p)
            for h, hv in snapshot.hosts.items()
            for v, vv in hv.vms.items()
            for p in vv.policies
        )
        self.forget_keys([k for k in self._queues.values() if k not in live])
        for n, (host, vm, policy) in enumerate(live, 1):
            self._consume(Key(host=host, vm=vm, policy=policy), flush=False)
            if n % RESYNC_CHUNK == 0 and self._events is not None:
                self._events.consume()  # its last consume waits: the round is done
                if self.keepalive is not None:
                    self.keepalive()
        if self._events is not None:
            self._events.consume()
        self.version = snapshot.version
        self._seen_ahead = 0
        self._next_check = time.monotonic() + self.settings.resync_interval

    def maybe_resync(self) -> None:
        """Every RESYNC_INTERVAL: resync if the ledger's mapping was ahead of ours at the
        last check and still is past that version — a delta lost. Ahead at one check
        alone proves nothing: a request commits its version before it publishes it."""
        if time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + self.settings.resync_interval
        if self._seen_ahead > self.version:
            log.warning("mapping moved without us hearing it; resyncing from a snapshot")
            self.resync()
            return
        ledger = self.store.mapping_version()
        self._seen_ahead = ledger if ledger > self.version else 0

    def own_delta(self, delta: MappingDelta) -> None:
        """A change this dispatcher made and carried out already: the next version, or
        one the fanout brings after those before it."""
        if delta.version == self.version + 1:
            self.version = delta.version
        elif delta.op == "keys_retired" and delta.keys:
            self._retired_at.update({(h, v, p): delta.version for h, v, p in delta.keys})

    def apply(self, delta: MappingDelta) -> None:
        """One delta; an old one is ignored, a gap resyncs."""
        if delta.version <= self.version:
            return
        if delta.version != self.version + 1:
            log.warning("mapping delta %d after %d: resyncing", delta.version, self.version)
            self.resync()
            return
        self.version = delta.version
        if self._retired_at:
            self._retired_at = {k: v for k, v in self._retired_at.items() if v > self.version}
        if self.owns is not None:
            mine = self._own_part(delta)
            if mine is None:
                return  # another shard's hosts: only the version moves
            delta = mine
        now = time.time()
        if delta.op == "key_added" and delta.vm and delta.policy:
            self.consume_keys([Key(host=delta.host, vm=delta.vm, policy=delta.policy)], now)
        elif delta.op == "keys_added" and delta.keys:
            self.consume_keys([Key(host=h, vm=v, policy=p) for h, v, p in delta.keys], now)
        elif delta.op == "keys_retired" and delta.keys:
            # a key holding a head was added again after this version: it stays
            self.forget_keys([k for k in delta.keys if not self.state.holds(k)])
        elif delta.op == "host_availability" and delta.available is not None:
            self.state.set_host_available(delta.host, delta.available)
        elif delta.op == "vm_availability" and delta.vm and delta.available is not None:
            self.state.set_vm_available(delta.host, delta.vm, delta.available)
        elif delta.op == "vm_removed" and delta.vm:
            self._remove_vm(delta.host, delta.vm)

    def _own_part(self, delta: MappingDelta) -> MappingDelta | None:
        """The part of ``delta`` for the hosts this shard serves; None: no part."""
        assert self.owns is not None
        if delta.keys:
            mine = [k for k in delta.keys if self.owns(k[0])]
            return delta.model_copy(update={"keys": mine}) if mine else None
        return delta if self.owns(delta.host) else None

    def consume_keys(self, keys: list[Key], now: float) -> None:
        """Keys (back) in the mapping: known to the dispatcher, their queues consumed
        (but not one this dispatcher retired at a later version)."""
        for key in keys:
            if (key.host, key.vm, key.policy) in self._retired_at:
                continue
            self.state.add_key(key.host, key.vm, key.policy, now)
            self._consume(key, flush=False)
        if self._events is not None:
            self._events.consume()

    def stop_consuming(self, keys: list[tuple[str, str, str]]) -> None:
        """Cancel the consumers of the keys' queues (a delivery still on its way is
        rejected back to its queue by the client)."""
        for key in keys:
            name = self.topology.event_queue_name(
                Key.model_construct(host=key[0], vm=key[1], policy=key[2])
            )
            if self._queues.pop(name, None) is not None and self._events is not None:
                self._events.cancel_by_queue(name)

    def forget_keys(self, keys: list[tuple[str, str, str]]) -> None:
        """Keys gone from the mapping: stop consuming their queues and forget them; a
        head one of them held goes back to its queue."""
        if not keys:
            return
        self.stop_consuming(keys)
        for item in self.state.retire_keys(keys):
            item.handle.requeue()

    def delete_queues(self, names: list[str], if_empty: bool) -> list[str]:
        """Delete event queues we no longer consume, on a channel of their own (a
        refusal closes it, and the next delete opens another); returns those deleted
        (``if_empty``: the broker refuses one that is not empty)."""
        assert self._events is not None
        conn = self._events.channel.connection.client
        deleted: list[str] = []
        channel = None
        try:
            for name in names:
                channel = channel or conn.channel()
                try:
                    channel.queue_delete(name, if_empty=if_empty)
                    deleted.append(name)
                except conn.channel_errors as exc:
                    log.info("queue %s kept: %r", name, exc)
                    channel = None
        finally:
            if channel is not None:
                with contextlib.suppress(*conn.channel_errors, *conn.connection_errors):
                    channel.close()
        return deleted

    def _consume(self, key: Key, flush: bool = True) -> None:
        spec = self.topology.event_queue(key)
        if spec.name in self._queues or self._events is None:
            return
        self._queues[spec.name] = (key.host, key.vm, key.policy)
        bound = queue(spec)(self._events.channel)
        bound.declare(nowait=True)  # pipelined; a real problem closes the channel
        self._events.add_queue(bound)
        if flush:
            self._events.consume()

    def _remove_vm(self, host: str, vm: str) -> None:
        """Stop consuming a removed VM's queues, give back any head held, and delete the
        queues if they are empty (the producer refused the removal while events were
        unfinished). Deleting them here, after our own cancel, means the broker never
        cancels a consumer under us.

        A queue whose head we give back is not deleted: the give-back (on the events
        channel) and the delete (on its own channel, which a refusal closes) are not
        ordered, so the delete could find the queue empty and drop the head — an event
        posted after the VM was re-added, before this removal reached us."""
        names = [n for n, key in self._queues.items() if key[:2] == (host, vm)]
        for name in names:
            del self._queues[name]
            if self._events is not None:
                self._events.cancel_by_queue(name)
        kept: set[str] = set()
        for item in self.state.remove_vm(host, vm):
            item.handle.requeue()
            kept.add(self.topology.event_queue_name(item.event.key))
        if self._events is not None:
            self._delete_if_empty([n for n in names if n not in kept], vm)

    def _delete_if_empty(self, names: list[str], vm: str) -> None:
        assert self._events is not None
        conn = self._events.channel.connection.client
        for name in names:
            channel = conn.channel()  # a refused delete closes only this channel
            try:
                channel.queue_delete(name, if_empty=True)
            except conn.channel_errors as exc:
                log.warning("queue %s of removed VM %s kept: %r", name, vm, exc)
            finally:
                with contextlib.suppress(*conn.channel_errors, *conn.connection_errors):
                    channel.close()
