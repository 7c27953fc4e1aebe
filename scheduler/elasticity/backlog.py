"""How much work waits for a profile: its actions queue, its running tasks, and its
events still in the per-key queues (held back by the dispatcher's limits) — and whether
the dispatcher is paused, which holds all of those events back (the dispatcher lease's
row in the ledger says so)."""

from __future__ import annotations

import logging
from urllib.parse import quote, urlparse

import httpx
import kombu

from scheduler.elasticity.model import Backlog
from scheduler.elasticity.settings import ElasticitySettings
from shared.lease import DISPATCHER
from shared.store import Store

log = logging.getLogger(__name__)


class BacklogProbe:
    def __init__(self, settings: ElasticitySettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.topology = settings.topology
        self._conn: kombu.Connection | None = None

    def __call__(self, profile: str, running: int) -> Backlog:
        queue = self.topology.actions_queue_of(profile).name
        if self.settings.rabbitmq_management_url:
            in_queue = self._management(queue)  # ready + unacked: running ones included
        else:
            in_queue = self._ready(queue) + running  # ready only over AMQP, so add running
        return Backlog(in_queue, self._waiting(profile))

    def dispatcher_paused(self) -> bool:
        """Whether the active dispatcher is paused, as its lease says (as of its last
        renewal, or at once after a pause or resume); False while no dispatcher holds the
        lease or the ledger does not answer (then the backlog counts as before)."""
        try:
            return self.store.lease_paused(DISPATCHER)
        except Exception as exc:
            log.warning("could not learn whether the dispatcher is paused: %r", exc)
            return False

    def _ready(self, queue: str) -> int:
        try:
            if self._conn is None:
                self._conn = kombu.Connection(self.settings.amqp_url)
            _, ready, _ = self._conn.default_channel.queue_declare(queue, passive=True)
            return int(ready)
        except Exception as exc:  # no queue yet, or the broker is away: count nothing
            log.debug("queue depth of %s unknown: %r", queue, exc)
            if self._conn is not None:
                self._conn.release()
            self._conn = None
            return 0

    def _management(self, queue: str) -> int:
        url = urlparse(self.settings.rabbitmq_management_url)
        vhost = urlparse(self.settings.amqp_urls[0]).path.lstrip("/") or "/"
        base = f"{url.scheme}://{url.hostname}:{url.port or 15672}"
        auth = (url.username or "guest", url.password or "guest")
        try:
            r = httpx.get(
                f"{base}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}",
                auth=auth,
                timeout=5,
            )
            r.raise_for_status()
            body = r.json()
            return int(body.get("messages_ready", 0)) + int(body.get("messages_unacknowledged", 0))
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("management API did not give the depth of %s: %r", queue, exc)
            return 0

    def _waiting(self, profile: str) -> int:
        by_action = self.store.queued_by_action()
        return sum(
            n for action, n in by_action.items() if self.settings.profile_for(action) == profile
        )
