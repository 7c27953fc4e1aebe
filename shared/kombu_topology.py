"""kombu objects for the specs of :mod:`shared.topology` (used by the dispatcher and the
Celery workers; the producer declares the same specs through aio-pika), and a one-off
confirmed publish to one of them."""

from __future__ import annotations

from typing import Any

from kombu import Connection, Exchange, Producer, Queue

from shared.models import MappingDelta
from shared.topology import ExchangeSpec, QueueSpec, Topology


def exchange(spec: ExchangeSpec) -> Exchange:
    return Exchange(spec.name, spec.type, durable=spec.durable)


def queue(spec: QueueSpec) -> Queue:
    """The queue, bound to its exchange when it has one (else routed through the default
    exchange by its name)."""
    return Queue(
        spec.name,
        exchange(spec.exchange) if spec.exchange else None,
        routing_key=spec.routing_key,
        durable=spec.durable,
        auto_delete=spec.auto_delete,
        exclusive=spec.exclusive,
        queue_arguments=spec.arguments,
    )


def publish_confirmed(amqp_url: str, spec: QueueSpec, body: Any, **properties: Any) -> None:
    """Publish ``body`` to the queue of ``spec`` (declared first) on a connection of its
    own, returning once the broker confirmed it; raises at once if the broker is down
    (no retry loop). For rare messages — a dead letter, a re-drive — not a hot path."""
    with Connection(amqp_url, transport_options={"confirm_publish": True}) as conn:
        conn.connect()
        Producer(conn.channel()).publish(
            body,
            exchange="",
            routing_key=spec.name,
            delivery_mode=2,
            declare=[queue(spec)],
            **properties,
        )


def publish_delta(amqp_url: str, topology: Topology, delta: MappingDelta) -> None:
    """Announce a mapping change on the mapping fanout, confirmed, on a connection of
    its own (a re-drive's: rare)."""
    with Connection(amqp_url, transport_options={"confirm_publish": True}) as conn:
        conn.connect()
        Producer(conn.channel()).publish(
            delta.model_dump_json(),
            exchange=exchange(topology.mapping_exchange),
            routing_key="",
            delivery_mode=2,
            content_type="application/json",
            content_encoding="utf-8",
            declare=[exchange(topology.mapping_exchange)],
        )
