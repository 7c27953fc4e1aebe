"""Publishing events into their per-key queues with publisher confirms.

Every event goes to the default exchange with its queue name as routing key and the
mandatory flag, so a missing queue comes back as a return instead of vanishing. The
publishes of one request are pipelined: all are sent, then all confirms awaited.

Whatever goes wrong on the broker side surfaces as :class:`BrokerUnavailable` (the
caller answers 503: nothing was accepted) or :class:`Unroutable`, never as anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from producer.errors import BrokerUnavailable, ProducerError, Unroutable
from shared.models import Key, MappingDelta, VmEventMessage
from shared.topology import QueueSpec, Topology

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _broker_errors(what: str) -> AsyncIterator[None]:
    """aio-pika signals a dead connection with AMQP errors, OSError, timeouts and plain
    RuntimeError alike: at this boundary all of them mean "not confirmed"."""
    try:
        yield
    except ProducerError:
        raise
    except Exception as exc:
        raise BrokerUnavailable(f"{what}: {exc!r}") from exc


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
            with contextlib.suppress(Exception):
                await self._conn.close()

    async def _ensure_channel(self) -> AbstractChannel:
        async with self._lock, _broker_errors("cannot reach the broker"):
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            self._channel = None
            if self._conn is None or self._conn.is_closed:
                self._conn = await aio_pika.connect_robust(self._url, timeout=self._timeout)
            channel = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
            ex = self._topology.mapping_exchange
            await channel.declare_exchange(
                ex.name, aio_pika.ExchangeType(ex.type), durable=ex.durable
            )
            self._declared.clear()  # a new channel may face a reset broker
            self._channel = channel
            return channel

    async def declare_keys(self, keys: Sequence[Key]) -> None:
        """Declare the event queues of ``keys`` (before their first event is published)."""
        for key in keys:
            await self.declare(self._topology.event_queue(key))

    async def declare(self, queue: QueueSpec) -> None:
        if queue.name in self._declared:
            return
        channel = await self._ensure_channel()
        async with _broker_errors(f"cannot declare {queue.name}"):
            await channel.declare_queue(
                queue.name,
                durable=queue.durable,
                exclusive=queue.exclusive,
                auto_delete=queue.auto_delete,
                arguments=queue.arguments,
            )
        self._declared.add(queue.name)

    async def publish_events(self, batch: Sequence[VmEventMessage]) -> None:
        """Publish ``batch``; returns only when the broker confirmed every message."""
        channel = await self._ensure_channel()
        specs = {e.id: self._topology.event_queue(e.key) for e in batch}
        for spec in set(specs.values()):
            await self.declare(spec)
        async with _broker_errors("broker did not confirm"):
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(self._publish_one(channel, e, specs[e.id]) for e in batch),
                    return_exceptions=True,
                ),
                self._timeout,
            )
        returned = [
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
        if returned:
            await self._republish(returned, specs)

    async def _republish(self, batch: list[VmEventMessage], specs: dict[str, QueueSpec]) -> None:
        """Messages came back unroutable: their queue vanished (deleted behind our
        declare cache). Declare again and publish once more; a second return is an error."""
        log.warning("%d messages returned unroutable; redeclaring their queues", len(batch))
        for spec in {specs[e.id] for e in batch}:
            self._declared.discard(spec.name)
            await self.declare(spec)
        channel = await self._ensure_channel()
        try:
            async with _broker_errors("broker did not confirm"):
                await asyncio.wait_for(
                    asyncio.gather(*(self._publish_one(channel, e, specs[e.id]) for e in batch)),
                    self._timeout,
                )
        except BrokerUnavailable as exc:
            if isinstance(exc.__cause__, aio_pika.exceptions.PublishError):
                raise Unroutable(f"event returned unroutable twice: {exc.__cause__}") from exc
            raise

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
        async with _broker_errors("cannot publish the mapping"):
            exchange = await channel.get_exchange(
                self._topology.mapping_exchange.name, ensure=False
            )
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
