"""Publishing events into their per-key queues with publisher confirms.

Every event goes to the default exchange with its queue name as routing key and the
mandatory flag, so a missing queue comes back as a return instead of vanishing. The
publishes of one request are pipelined: all are sent, then all confirms awaited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from producer.errors import BrokerUnavailable, Unroutable
from shared.models import MappingDelta, VmEventMessage
from shared.topology import QueueSpec, Topology

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, url: str, topology: Topology, timeout: float) -> None:
        self._url = url
        self._topology = topology
        self._timeout = timeout
        self._conn: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect (the connection is robust: it reconnects by itself with backoff)."""
        await self._ensure_channel()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed

    async def _ensure_channel(self) -> AbstractChannel:
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            try:
                if self._conn is None or self._conn.is_closed:
                    self._conn = await aio_pika.connect_robust(self._url, timeout=self._timeout)
                self._channel = await self._conn.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                ex = self._topology.mapping_exchange
                await self._channel.declare_exchange(
                    ex.name, aio_pika.ExchangeType(ex.type), durable=ex.durable
                )
            except (TimeoutError, aio_pika.exceptions.AMQPError, OSError) as exc:
                self._channel = None
                raise BrokerUnavailable(f"cannot reach the broker: {exc}") from exc
            self._declared.clear()  # a new channel may face a reset broker
            return self._channel

    async def declare(self, queue: QueueSpec) -> None:
        channel = await self._ensure_channel()
        if queue.name in self._declared:
            return
        await channel.declare_queue(
            queue.name,
            durable=queue.durable,
            exclusive=queue.exclusive,
            auto_delete=queue.auto_delete,
            arguments=queue.arguments,
        )
        self._declared.add(queue.name)

    async def publish_events(self, batch: Sequence[VmEventMessage]) -> None:
        """Publish ``batch``; returns only when the broker confirmed every message.
        Raises :class:`BrokerUnavailable` (nothing can be assumed stored) or
        :class:`Unroutable`."""
        try:
            channel = await self._ensure_channel()
            specs = {e.id: self._topology.event_queue(e.key) for e in batch}
            await asyncio.gather(*(self.declare(s) for s in set(specs.values())))
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(self._publish_one(channel, e, specs[e.id]) for e in batch),
                    return_exceptions=True,
                ),
                self._timeout,
            )
        except (TimeoutError, aio_pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"broker did not confirm: {exc!r}") from exc
        retry = [
            e
            for e, r in zip(batch, results, strict=True)
            if isinstance(r, aio_pika.exceptions.PublishError)
        ]
        failed = [
            r
            for r in results
            if isinstance(r, BaseException) and not isinstance(r, aio_pika.exceptions.PublishError)
        ]
        if failed:
            raise BrokerUnavailable(f"broker did not confirm: {failed[0]!r}") from failed[0]
        if retry:
            await self._republish(retry, specs)

    async def _republish(self, batch: list[VmEventMessage], specs: dict[str, QueueSpec]) -> None:
        """Messages came back unroutable: their queue vanished (deleted behind our
        declare cache). Declare again and publish once more; a second return is an error."""
        log.warning("%d messages returned unroutable; redeclaring their queues", len(batch))
        for spec in set(specs[e.id] for e in batch):
            self._declared.discard(spec.name)
            await self.declare(spec)
        channel = await self._ensure_channel()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(self._publish_one(channel, e, specs[e.id]) for e in batch)),
                self._timeout,
            )
        except aio_pika.exceptions.PublishError as exc:
            raise Unroutable(f"event returned unroutable twice: {exc}") from exc

    @staticmethod
    async def _publish_one(
        channel: AbstractChannel, event: VmEventMessage, queue: QueueSpec
    ) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(
                event.model_dump_json().encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=event.id,
            ),
            routing_key=queue.name,
            mandatory=True,
        )

    async def publish_deltas(self, deltas: Sequence[MappingDelta]) -> None:
        if not deltas:
            return
        channel = await self._ensure_channel()
        exchange = await channel.get_exchange(self._topology.mapping_exchange.name, ensure=False)
        for delta in deltas:
            await exchange.publish(
                aio_pika.Message(
                    delta.model_dump_json().encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="",
                mandatory=False,  # no scheduler bound yet is fine: it starts from a snapshot
            )

    async def delete_queue_if_empty(self, name: str) -> bool:
        channel = await self._ensure_channel()
        try:
            await channel.queue_delete(name, if_empty=True)
        except aio_pika.exceptions.AMQPChannelError:
            self._channel = None  # the failed delete closed the channel
            return False
        self._declared.discard(name)
        return True
