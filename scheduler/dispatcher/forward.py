"""Questions about a host another shard serves, sent on to that shard.

With dispatcher shards, what holds an event's head is known only to the shard that
serves its host; the producer (``DISPATCHER_URL``) and an operator ask whichever shard
they reach. So a shard that does not know an event asks the ledger which shard serves
the event's host and where its admin API answers (``dispatcher_shards.url``, said in
each heartbeat), and passes the question on — once: a question passed on is answered
where it lands (:data:`FORWARDED`), so two shards that disagree for a moment about who
serves a host never send it back and forth.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

import httpx

from shared import partition_leases
from shared.store import Store

log = logging.getLogger(__name__)

#: the header of a question passed on by another shard
FORWARDED = "X-Carousel-Forwarded"


def advertised_url(configured: str, host: str, port: int) -> str:
    """Where other shards reach this one: ``configured`` (DISPATCHER_ADVERTISE_URL) when
    set; else loopback when the API listens on loopback only, else the address this
    machine's name resolves to (in a container, the container's own)."""
    if configured:
        return configured.rstrip("/")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return f"http://127.0.0.1:{port}"
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        address = "127.0.0.1"
    return f"http://{address}:{port}"


@dataclass(frozen=True)
class Owners:
    """Finds the shard serving an event's host and asks it."""

    store: Store
    partitions: int
    #: this shard's name
    me: str
    timeout: float = 2.0

    def url_of(self, host: str) -> str | None:
        """The admin URL of the live shard serving ``host``, unless it is this one."""
        partition = partition_leases.partition_of(host, self.partitions)
        with self.store.engine.begin() as conn:
            holder = partition_leases.holders(conn, [partition]).get(partition)
            if holder is None or holder == self.me:
                return None
            urls = {row.shard: row.url for row in partition_leases.live_shards(conn)}
        return urls.get(holder)

    def waiting(self, event_id: str, authorization: str | None) -> dict[str, Any] | None:
        """The owning shard's answer to ``GET /waiting/{event_id}``; None when the event
        is unknown, its host is this shard's or no one's, or the owner does not answer."""
        event = self.store.event(event_id)
        url = None if event is None else self.url_of(event.host)
        if url is None:
            return None
        headers = {FORWARDED: "1"}
        if authorization:
            headers["Authorization"] = authorization
        try:
            r = httpx.get(f"{url}/waiting/{event_id}", headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            log.info("the shard at %s did not answer about event %s: %r", url, event_id, exc)
            return None
        if r.status_code != 200:
            return None
        answer: dict[str, Any] = r.json()
        return answer
