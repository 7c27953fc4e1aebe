"""What the REST handlers do: accept events durably, keep and publish the mapping."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from producer.errors import BrokerUnavailable, VmBeingRemoved, VmHasUnfinishedEvents
from producer.publisher import Publisher
from producer.schemas import VmEventIn
from shared.models import Key, MappingDelta, VmEventMessage
from shared.store import Store

log = logging.getLogger(__name__)


class EventService:
    """One per producer process. Removing a VM and accepting events for it are kept
    apart here (a per-VM count of requests in progress), so a removal never races an
    event into a VM it is deleting."""

    def __init__(self, store: Store, publisher: Publisher) -> None:
        self.store = store
        self.publisher = publisher
        self._known_keys: set[Key] = set()
        self._mapping_lock = asyncio.Lock()  # one mapping writer at a time: versions in order
        self._accepting: Counter[tuple[str, str]] = Counter()
        self._removing: set[tuple[str, str]] = set()

    async def accept(self, events_in: Sequence[VmEventIn]) -> list[str]:
        """Store, publish and await confirms; only then return the ids (202)."""
        now = time.time()
        batch = [
            VmEventMessage(
                id=e.id or str(uuid.uuid4()),
                host=e.host,
                vm=e.vm,
                policy=e.policy,
                action=e.action,
                payload=e.payload,
                accepted_at=now,
            )
            for e in events_in
        ]
        with self._accepting_for({(e.host, e.vm) for e in batch}):
            accepted = await asyncio.to_thread(self.store.accept, batch)
            if not accepted.to_publish:
                return accepted.ids
            try:
                await self._ensure_mapping([e.key for e in accepted.to_publish])
                await self.publisher.publish_events(accepted.to_publish)
            except BaseException:
                await asyncio.to_thread(self.store.discard, accepted.inserted)
                raise
            await asyncio.to_thread(self.store.confirm, accepted.to_publish)
        return accepted.ids

    @contextmanager
    def _accepting_for(self, vms: set[tuple[str, str]]) -> Iterator[None]:
        if busy := vms & self._removing:
            host, vm = next(iter(busy))
            raise VmBeingRemoved(host, vm)
        self._accepting.update(vms)
        try:
            yield
        finally:
            self._accepting.subtract(vms)

    async def _ensure_mapping(self, batch_keys: list[Key]) -> None:
        """Add keys seen for the first time, in the order they appear in the request."""
        new = [k for k in dict.fromkeys(batch_keys) if k not in self._known_keys]
        if not new:
            return
        async with self._mapping_lock:
            deltas = await asyncio.to_thread(self.store.ensure_keys, new)
            await self.publisher.declare_keys(new)  # so the first event is routable
            await self.publisher.publish_deltas(deltas)
            self._known_keys.update(new)

    async def set_host_available(self, host: str, available: bool) -> MappingDelta | None:
        async with self._mapping_lock:
            delta = await asyncio.to_thread(self.store.set_host_available, host, available)
            await self._announce(delta)
        return delta

    async def set_vm_available(self, host: str, vm: str, available: bool) -> MappingDelta | None:
        async with self._mapping_lock:
            delta = await asyncio.to_thread(self.store.set_vm_available, host, vm, available)
            await self._announce(delta)
        return delta

    async def remove_vm(self, host: str, vm: str) -> MappingDelta | None:
        """Remove a VM from the mapping, refusing while it has unfinished events. New
        events for it are refused (409) while this runs. Its queues, empty by then, are
        deleted by the scheduler once it has stopped consuming them."""
        key = (host, vm)
        if key in self._removing:
            raise VmBeingRemoved(host, vm)
        self._removing.add(key)
        try:
            while self._accepting[key] > 0:  # let requests already in progress finish
                await asyncio.sleep(0.01)
            async with self._mapping_lock:
                count = await asyncio.to_thread(self.store.unfinished_count, host, vm)
                if count:
                    raise VmHasUnfinishedEvents(count)
                delta = await asyncio.to_thread(self.store.remove_vm, host, vm)
                self._known_keys = {k for k in self._known_keys if (k.host, k.vm) != key}
                await self._announce(delta)
            return delta
        finally:
            self._removing.discard(key)

    async def _announce(self, delta: MappingDelta | None) -> None:
        """Publish a mapping change already stored in the ledger. If the broker is away
        the change still stands: schedulers find it at their next resync."""
        if delta is None:
            return
        try:
            await self.publisher.publish_deltas([delta])
        except BrokerUnavailable as exc:
            log.warning(
                "mapping change %d stored but not announced (%s); schedulers will "
                "find it at their next resync",
                delta.version,
                exc,
            )
