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
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq import spec as amqp_spec

from producer.errors import BrokerUnavailable, ProducerError, Unroutable
from shared.models import Key, MappingDelta, VmEventMessage
from shared.settings import amqp_urls
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
    """Publishes over one connection. ``url`` may name several nodes of a cluster
    (``;``-separated, see :func:`shared.settings.amqp_urls`): the publisher connects to
    the first that answers; when that connection's channel is lost it moves on to the
    next node rather than waiting for the lost one to come back."""

    def __init__(self, url: str, topology: Topology, timeout: float) -> None:
        self._urls = amqp_urls(url)
        self._node = 0  # index in _urls of the node connected to, or to try first
        self._topology = topology
        self._timeout = timeout
        self._conn: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._lock = asyncio.Lock()

    @property
    def timeout(self) -> float:
        """Seconds a publish may wait for its confirm (PUBLISH_TIMEOUT)."""
        return self._timeout

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
            lost = self._channel is not None
            self._channel = None
            if lost and len(self._urls) > 1 and self._conn is not None:
                await self._leave_node()
            if self._conn is None or self._conn.is_closed:
                self._conn = await self._connect()
            channel = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
            ex = self._topology.mapping_exchange
            await channel.declare_exchange(
                ex.name, aio_pika.ExchangeType(ex.type), durable=ex.durable
            )
            self._declared.clear()  # a new channel may face a reset broker
            self._channel = channel
            return channel

    async def _connect(self) -> AbstractRobustConnection:
        """A robust connection to the first node that answers, from the current one on
        (a lone node reconnects by itself; a cluster's next node is tried instead)."""
        for attempt in range(len(self._urls)):
            url = self._urls[self._node]
            try:
                return await aio_pika.connect_robust(url, timeout=self._timeout)
            except Exception:
                if attempt == len(self._urls) - 1:
                    raise
                log.warning("broker node %s does not answer; trying the next", _host(url))
                self._node = (self._node + 1) % len(self._urls)
        raise AssertionError("unreachable")

    async def _leave_node(self) -> None:
        """Close the connection whose channel was lost and make the next node the first
        to try: the lost node may be down for good."""
        assert self._conn is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._conn.close(), self._timeout)
        self._conn = None
        self._node = (self._node + 1) % len(self._urls)
        log.warning("lost the broker channel; moving to node %s", _host(self._urls[self._node]))

    async def _drop_channel(self) -> None:
        """The broker refused messages (a nack): the next request opens a new channel.
        A channel that published to a quorum queue while its leader was being elected
        (its node just went down) was seen to nack every later publish to it."""
        async with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), self._timeout)

    async def declare_keys(self, keys: Sequence[Key]) -> None:
        """Declare the event queues of ``keys`` (before their first event is published):
        one pipelined round, not one round trip per queue. Each is declared even if
        this process declared it before: a key new to the mapping may be one retired
        meanwhile, whose queue was deleted."""
        queues = [self._topology.event_queue(key) for key in keys]
        self._declared.difference_update(q.name for q in queues)
        await self._declare_all(queues)

    async def _declare_all(self, queues: Sequence[QueueSpec]) -> None:
        """Declare ``queues`` in one pipelined round: every declare but the last is sent
        without waiting for its answer (``nowait``), the last one waits. The broker
        handles a channel's methods in order, so the last answer means every queue
        exists; a refused declare closes the channel, and the wait fails with it."""
        todo = list({q.name: q for q in queues if q.name not in self._declared}.values())
        if not todo:
            return
        channel = await self._ensure_channel()
        async with _broker_errors("cannot declare the event queues"):
            underlay = await channel.get_underlay_channel()
            for queue in todo[:-1]:
                await underlay.queue_declare(
                    queue.name,
                    durable=queue.durable,
                    exclusive=queue.exclusive,
                    auto_delete=queue.auto_delete,
                    arguments=queue.arguments,
                    nowait=True,
                )
            await asyncio.wait_for(self.declare(todo[-1]), self._timeout)
        self._declared.update(q.name for q in todo)

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
        by_key: dict[tuple[str, str, str], QueueSpec] = {}
        specs: dict[str, QueueSpec] = {}
        for e in batch:
            k = (e.host, e.vm, e.policy)
            if (queue := by_key.get(k)) is None:
                queue = by_key[k] = self._topology.event_queue(
                    Key.model_construct(host=e.host, vm=e.vm, policy=e.policy)
                )
            specs[e.id] = queue
        await self._declare_all(list(by_key.values()))
        async with _broker_errors("broker did not confirm"):
            underlay = await channel.get_underlay_channel()
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(self._publish_fast(underlay, e, specs[e.id]) for e in batch),
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
            if any(isinstance(r, aio_pika.exceptions.DeliveryError) for r in failed):
                await self._drop_channel()
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
    async def _publish_fast(underlay: Any, event: VmEventMessage, queue: QueueSpec) -> None:
        """:meth:`_publish_one` on aio-pika's underlying aiormq channel: the same frames
        (body, properties, mandatory), without aio-pika's per-message objects (they
        were a third of the producer's CPU per event). A return raises PublishError
        (the channel has on_return_raises)."""
        confirm = await underlay.basic_publish(
            _body(event),
            exchange="",
            routing_key=queue.name,
            properties=amqp_spec.Basic.Properties(
                content_type="application/json", delivery_mode=2, message_id=event.id
            ),
            mandatory=True,
            wait=False,
        )
        if not isinstance(confirm, amqp_spec.Basic.Ack):  # a return raised PublishError already
            raise BrokerUnavailable(f"broker did not acknowledge: {confirm!r}")

    @staticmethod
    async def _publish_one(
        channel: AbstractChannel, event: VmEventMessage, queue: QueueSpec
    ) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(
                _body(event),
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
                    mandatory=False,  # no dispatcher bound yet is fine: it starts from a snapshot
                )


def _host(url: str) -> str:
    """``host:port`` of a broker URL, for logs (no credentials)."""
    return url.split("@")[-1].split("/")[0]


def _body(event: VmEventMessage) -> bytes:
    """The message body: :class:`VmEventMessage` as JSON (what ``model_dump_json``
    gives, written by orjson, which is faster; a payload orjson refuses, such as an
    integer beyond 64 bits, which JSON allows, goes through pydantic instead)."""
    try:
        return orjson.dumps(
            {
                "id": event.id,
                "host": event.host,
                "vm": event.vm,
                "policy": event.policy,
                "action": event.action,
                "payload": event.payload,
                "accepted_at": event.accepted_at,
                "priority": event.priority,
                "group": event.group,
            }
        )
    except orjson.JSONEncodeError:
        return event.model_dump_json().encode()
