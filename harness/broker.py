"""Tearing down what one private topology left on the broker."""

from __future__ import annotations

from collections.abc import Iterable

import kombu

from shared.models import Key
from shared.topology import Topology


def delete_topology(
    amqp_url: str, topology: Topology, keys: Iterable[Key], profiles: Iterable[str] = ()
) -> None:
    """Delete every queue and exchange of ``topology``: the event queues of ``keys`` (the
    ledger lists them), each profile's actions queue and exchange, the completions queue
    and the mapping exchange. Deleting an absent queue or exchange is no error."""
    profiles = list(profiles)
    with kombu.Connection(amqp_url) as conn:
        channel = conn.channel()
        for spec in topology.durable_queues(keys, profiles):
            channel.queue_delete(spec.name)
        for exchange in topology.exchanges(profiles):
            channel.exchange_delete(exchange.name)
