"""kombu objects for the topology of :mod:`shared.topology` (used by the scheduler and
the Celery workers; the producer declares the same specs through aio-pika)."""

from __future__ import annotations

from kombu import Exchange, Queue

from shared.topology import ExchangeSpec, QueueSpec


def event_queue(spec: QueueSpec) -> Queue:
    """A per-key event queue: routed through the default exchange by its name."""
    return Queue(
        spec.name,
        durable=spec.durable,
        auto_delete=spec.auto_delete,
        exclusive=spec.exclusive,
        queue_arguments=spec.arguments,
    )


def direct_queue(spec: QueueSpec) -> Queue:
    """A queue bound to a direct exchange of the same name (how Celery routes tasks)."""
    return Queue(
        spec.name,
        Exchange(spec.name, "direct", durable=True),
        routing_key=spec.name,
        durable=spec.durable,
        queue_arguments=spec.arguments,
    )


def exchange(spec: ExchangeSpec) -> Exchange:
    return Exchange(spec.name, spec.type, durable=spec.durable)
