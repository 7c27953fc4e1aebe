"""kombu objects for the specs of :mod:`shared.topology` (used by the scheduler and the
Celery workers; the producer declares the same specs through aio-pika)."""

from __future__ import annotations

from kombu import Exchange, Queue

from shared.topology import ExchangeSpec, QueueSpec


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
