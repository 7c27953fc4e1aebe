"""Poison messages: a delivery no handler can read is moved, not dropped or retried.

A message that cannot be decoded (not JSON, a content type we do not accept) or is not a
valid message of its queue (an event, a completion, a mapping delta) would otherwise
either be lost or — worse — come back for ever and end the session each time. It is
republished, confirmed, to the topology's dead-letter queue with the reason and where it
came from in its headers; only then is the original acked.
"""

from __future__ import annotations

from typing import Any

from kombu.message import Message

from scheduler.dispatcher.confirms import ConfirmingProducer
from shared.kombu_topology import queue
from shared.topology import DEAD_ORIGIN, DEAD_REASON, QueueSpec


def dead_letter(
    producer: ConfirmingProducer, dead: QueueSpec, message: Message, reason: str
) -> None:
    """Publish ``message`` as it came, plus why and whence, to ``dead``; returns once the
    broker confirmed it (raises otherwise, and the original stays unacked)."""
    info = message.delivery_info or {}
    headers: dict[str, Any] = {
        **(message.headers or {}),
        DEAD_REASON: reason[:1000],
        DEAD_ORIGIN: f"{info.get('exchange', '')}/{info.get('routing_key', '')}",
    }

    def send(p: Any) -> None:
        p.publish(
            message.body,
            exchange="",
            routing_key=dead.name,
            headers=headers,
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
            delivery_mode=2,
            declare=[queue(dead)],
        )

    producer.publish_all([send])
