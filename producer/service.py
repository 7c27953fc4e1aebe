"""What the REST handlers do: accept events durably, keep and publish the mapping."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence

from producer.errors import BrokerUnavailable
from producer.publisher import Publisher
from producer.schemas import VmEventIn
from shared.models import Key, MappingDelta, VmEventMessage
from shared.store import Store

log = logging.getLogger(__name__)


class VmHasPendingEvents(Exception):
    def __init__(self, count: int) -> None:
        super().__init__(f"the VM still has {count} unfinished events")
        self.count = count


class EventService:
    def __init__(self, store: Store, publisher: Publisher) -> None:
        self.store = store
        self.publisher = publisher
        self._known_keys: set[Key] = set()
        self._mapping_lock = asyncio.Lock()  # one mapping writer at a time

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
        accepted = await asyncio.to_thread(self.store.accept, batch)
        if not accepted.to_publish:
            return accepted.ids
        ids = [e.id for e in accepted.to_publish]
        try:
            await self._ensure_mapping([e.key for e in accepted.to_publish])
            await self.publisher.publish_events(accepted.to_publish)
        except BaseException:
            await asyncio.to_thread(self.store.discard, ids)
            raise
        await asyncio.to_thread(self.store.confirm, ids)
        return accepted.ids

    async def _ensure_mapping(self, batch_keys: list[Key]) -> None:
        """Add keys seen for the first time, in the order they appear in the request."""
        new = [k for k in dict.fromkeys(batch_keys) if k not in self._known_keys]
        if not new:
            return
        async with self._mapping_lock:
            deltas = await asyncio.to_thread(self.store.ensure_keys, new)
            for key in new:  # declare before publishing so the first event is routable
                await self.publisher.declare(self.store.topology.event_queue(key))
            await self.publisher.publish_deltas(deltas)
            self._known_keys.update(new)

    async def set_host_available(self, host: str, available: bool) -> bool:
        delta = await asyncio.to_thread(self.store.set_host_available, host, available)
        return await self._announce(delta)

    async def set_vm_available(self, host: str, vm: str, available: bool) -> bool:
        delta = await asyncio.to_thread(self.store.set_vm_available, host, vm, available)
        return await self._announce(delta)

    async def remove_vm(self, host: str, vm: str) -> bool:
        """Remove a VM from the mapping, refusing while it has unfinished events."""
        count = await asyncio.to_thread(self.store.unfinished_count, host, vm)
        if count:
            raise VmHasPendingEvents(count)
        queues = await asyncio.to_thread(self.store.vm_queues, host, vm)
        delta = await asyncio.to_thread(self.store.remove_vm, host, vm)
        if delta is None:
            return False
        self._known_keys = {k for k in self._known_keys if (k.host, k.vm) != (host, vm)}
        await self._announce(delta)
        for name in queues:
            try:
                await self.publisher.delete_queue_if_empty(name)
            except BrokerUnavailable:
                log.warning("could not delete queue %s of removed VM", name)
        return True

    async def _announce(self, delta: MappingDelta | None) -> bool:
        if delta is None:
            return False
        await self.publisher.publish_deltas([delta])
        return True
