"""What the REST handlers do: accept events durably, keep and publish the mapping."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from producer.errors import BrokerUnavailable, VmBeingRemoved, VmHasUnfinishedEvents
from producer.publisher import Publisher
from producer.schemas import VmEventIn
from producer.waiting import DispatcherClient, explain
from shared.mapping_store import RemovalUnderway, UnfinishedEvents
from shared.models import MappingDelta, Status, VmEventMessage
from shared.store import Store

log = logging.getLogger(__name__)

#: (host, vm) -> the VM's group as last observed, or None
GroupOf = Callable[[str, str], str | None]

#: a removal's mark on its VM is void after this long (its remover died meanwhile)
REMOVAL_MARK_SECONDS = 60.0


class Answer(NamedTuple):
    """What ``POST /events`` answers: the ids in request order (a coalesced event's is
    the id of the event that answers it), and which were coalesced."""

    ids: list[str]
    coalesced: list[bool]


class EventService:
    """One per producer process; everything shared between processes is in the ledger.

    Removing a VM and accepting events for it are kept apart there: a removal marks the
    VM's row, an accept reads the rows of its VMs in its insert transaction (FOR SHARE
    on PostgreSQL, under SQLite's write lock) and refuses a marked one, and the removal
    counts the VM's unfinished events — pending ones of requests still publishing
    included — in the transaction that deletes it. So a removal never races an event
    into a VM it is deleting, whichever producer process serves either request."""

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        coalescing: frozenset[str] = frozenset(),
        dispatcher: DispatcherClient | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        #: asked what holds a queued event the ledger finds first in its key; None: none
        self.dispatcher = dispatcher
        #: the policies whose events coalesce unless an event says otherwise
        self.coalescing = coalescing
        #: the group of a VM an event names none for (the monitoring's, when it runs)
        self.group_of: GroupOf | None = None
        #: a pending row younger than this may be a request still publishing it
        self.pending_grace = 3 * publisher.timeout + 60.0

    async def accept(self, events_in: Sequence[VmEventIn]) -> Answer:
        """Store, publish and await confirms; only then return the ids (202). The
        request's new keys are stored with its events (one transaction, one mapping
        version), declared in one pipelined round and announced in one delta. An event
        that coalesces and finds one waiting for the same action is answered with that
        one's id (see :mod:`shared.coalescing`)."""
        now = time.time()
        group_of = self.group_of
        batch = [
            # fields validated by VmEventIn already: no second validation per event
            VmEventMessage.model_construct(
                id=e.id or str(uuid.uuid4()),
                host=e.host,
                vm=e.vm,
                policy=e.policy,
                action=e.action,
                payload=e.payload,
                accepted_at=now,
                priority=e.priority,
                group=e.group or (group_of(e.host, e.vm) if group_of is not None else None),
            )
            for e in events_in
        ]
        coalesce = {
            m.id
            for m, e in zip(batch, events_in, strict=True)
            if (e.policy in self.coalescing if e.coalesce is None else e.coalesce)
        }
        try:
            admitted = await asyncio.to_thread(
                self.store.admit, batch, now - REMOVAL_MARK_SECONDS, coalesce
            )
        except RemovalUnderway as exc:
            raise VmBeingRemoved(exc.host, exc.vm) from exc
        accepted = admitted.accepted
        if admitted.new_keys:
            try:  # so the first event is routable, and the dispatcher consumes the queues
                await self.publisher.declare_keys(admitted.new_keys)
                await self.publisher.publish_deltas([admitted.delta] if admitted.delta else [])
            except BaseException:
                await asyncio.to_thread(self.store.discard, accepted.inserted)
                raise
        answer = Answer(accepted.ids, accepted.coalesced)
        if not accepted.to_publish:
            return answer
        try:
            await self.publisher.publish_events(accepted.to_publish)
        except BaseException:
            await asyncio.to_thread(self.store.discard, accepted.inserted)
            raise
        await asyncio.to_thread(self.store.confirm, accepted.to_publish)
        return answer

    async def view(self, event_id: str) -> dict[str, Any] | None:
        """The event as ``GET /events/{id}`` shows it, with what holds it while it is
        queued (:mod:`producer.waiting`); None if unknown (or not yet accepted)."""
        row = await asyncio.to_thread(self.store.get, event_id)
        if row is None or row["status"] == Status.PENDING:
            return None
        if row["status"] == Status.QUEUED:
            holds = await asyncio.to_thread(self.store.holds, row)
            row["waiting"] = await explain(row, holds, self.dispatcher)
        return row

    async def set_host_available(self, host: str, available: bool) -> MappingDelta | None:
        delta = await asyncio.to_thread(self.store.set_host_available, host, available)
        await self._announce(delta)
        return delta

    async def set_vm_available(self, host: str, vm: str, available: bool) -> MappingDelta | None:
        delta = await asyncio.to_thread(self.store.set_vm_available, host, vm, available)
        await self._announce(delta)
        return delta

    async def remove_vm(self, host: str, vm: str) -> MappingDelta | None:
        """Remove a VM from the mapping, refusing while it has unfinished events. New
        events for it are refused (409) while this runs, by every producer process. Its
        queues, empty by then, are deleted by the dispatcher once it has stopped
        consuming them."""
        mark = time.time()
        try:
            marked = await asyncio.to_thread(
                self.store.mark_removing, host, vm, mark, mark - REMOVAL_MARK_SECONDS
            )
        except RemovalUnderway as exc:
            raise VmBeingRemoved(host, vm) from exc
        if not marked:
            return None
        try:
            delta = await asyncio.to_thread(
                self.store.remove_marked_vm, host, vm, mark, time.time() - self.pending_grace
            )
        except UnfinishedEvents as exc:
            await asyncio.to_thread(self.store.unmark_removing, host, vm, mark)
            raise VmHasUnfinishedEvents(exc.count) from exc
        except RemovalUnderway as exc:
            raise VmBeingRemoved(host, vm) from exc
        except BaseException:
            await asyncio.to_thread(self.store.unmark_removing, host, vm, mark)
            raise
        await self._announce(delta)
        return delta

    async def _announce(self, delta: MappingDelta | None) -> None:
        """Publish a mapping change already stored in the ledger. If the broker is away
        the change still stands: dispatchers find it at their next resync. Versions are
        given in the ledger; two requests (or processes) may announce theirs out of
        order, and a dispatcher that sees a gap resyncs from the ledger."""
        if delta is None:
            return
        try:
            await self.publisher.publish_deltas([delta])
        except BrokerUnavailable as exc:
            log.warning(
                "mapping change %d stored but not announced (%s); dispatchers will "
                "find it at their next resync",
                delta.version,
                exc,
            )
