"""The AMQP topology, defined once.

Every exchange and queue Carousel uses is named here from one prefix (``CAROUSEL_PREFIX``,
default ``carousel``), so a test can run a whole private topology beside a live one.
Queues are declared with exactly these arguments by every service; two declarations
with different arguments would make RabbitMQ refuse the second.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.models import Key

MAX_QUEUE_NAME = 255  # bytes, AMQP 0-9-1 shortstr

#: Headers of a message in the dead-letter queue: why it is there and where it came from.
DEAD_REASON = "x-carousel-reason"
DEAD_ORIGIN = "x-carousel-from"

#: Routing keys of the worker's task events that end a task, as the completions queue is
#: bound to the events exchange: ``task.multi`` carries a worker's buffered task events
#: (prefork), the others come one by one (a pool without an event loop)
COMPLETION_EVENT_KEYS = ("task.multi", "task.succeeded", "task.failed")

#: Arguments of every durable queue by default: classic queues (``QUEUE_TYPE``).
DURABLE_QUEUE_ARGS: dict[str, Any] = {"x-queue-type": "classic"}
#: The durable queue types: classic (one node holds each queue) or quorum (replicated
#: over a cluster's nodes by Raft: a queue survives the loss of a minority of them)
QUEUE_TYPES = ("classic", "quorum")


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str
    durable: bool = True


@dataclass(frozen=True)
class QueueSpec:
    """A queue, and the exchange it is bound to (``None``: only the default exchange,
    which routes by queue name)."""

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=lambda: dict(DURABLE_QUEUE_ARGS))
    exchange: ExchangeSpec | None = None
    routing_key: str = ""

    def __hash__(self) -> int:
        return hash((self.name, self.durable, self.exclusive, self.auto_delete, self.exchange))


DEFAULT_PROFILE = "default"
PREFIX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


@dataclass(frozen=True)
class Topology:
    prefix: str = "carousel"
    #: the type of every durable queue (``QUEUE_TYPE``): the event queues, the actions,
    #: completions and dead-letter queues; a dispatcher's own mapping queue stays classic
    queue_type: str = "classic"

    def __post_init__(self) -> None:
        if self.queue_type not in QUEUE_TYPES:
            raise ValueError(f"bad queue type {self.queue_type!r}: one of {QUEUE_TYPES}")
        # <= 64 chars keeps every event queue name within 255 bytes
        if not re.fullmatch(PREFIX_PATTERN, self.prefix):
            raise ValueError(
                f"bad queue name prefix {self.prefix!r}: 1-64 chars of "
                "[A-Za-z0-9_.-] starting alphanumeric"
            )

    def _durable(self) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type}

    # -- per-key event queues ------------------------------------------------------
    def event_queue_name(self, key: Key) -> str:
        """``<prefix>.ev.<host>/<vm>/<policy>``, unambiguous because ``/`` is never in a
        name. When that would pass 255 bytes, the parts are cut and a hash of the full
        key follows a ``#`` (also never in a name), so the result stays unique."""
        full = f"{self.prefix}.ev.{key.host}/{key.vm}/{key.policy}"
        if len(full.encode()) <= MAX_QUEUE_NAME:
            return full
        digest = hashlib.sha256(f"{key.host}/{key.vm}/{key.policy}".encode()).hexdigest()[:32]
        return f"{self.prefix}.ev.{key.host[:48]}/{key.vm[:48]}/{key.policy[:48]}#{digest}"

    def event_queue(self, key: Key) -> QueueSpec:
        return QueueSpec(self.event_queue_name(key), arguments=self._durable())

    # -- shared queues and exchanges -----------------------------------------------
    @property
    def actions_queue(self) -> QueueSpec:
        """Celery tasks (one per dispatched event) for the workers of the default profile."""
        return self.actions_queue_of(DEFAULT_PROFILE)

    def actions_queue_of(self, profile: str) -> QueueSpec:
        """Celery tasks for the workers of one profile (see ``ACTION_PROFILES``), bound
        to a direct exchange of the same name, as Celery routes tasks."""
        name = f"{self.prefix}.actions"
        if profile != DEFAULT_PROFILE:
            name = f"{name}.{profile}"
        return QueueSpec(
            name,
            arguments=self._durable(),
            exchange=ExchangeSpec(name, "direct"),
            routing_key=name,
        )

    @property
    def completions_queue(self) -> QueueSpec:
        """Workers -> dispatcher: an action finished, free its slot. It is also bound to
        :attr:`events_exchange` by :data:`COMPLETION_EVENT_KEYS`: a worker's task-succeeded
        event is the completion (no message of its own)."""
        return QueueSpec(f"{self.prefix}.completions", arguments=self._durable())

    def shard_completions_queue(self, shard: str) -> QueueSpec:
        """Each dispatcher shard's own copy of every worker task event (bound like
        :attr:`completions_queue`): a shard frees only its own events' slots, so each must
        see them all. Classic and auto-deleted: it lives with its shard's session."""
        return QueueSpec(
            f"{self.prefix}.completions.{shard}",
            durable=False,
            auto_delete=True,
            arguments={"x-queue-type": "classic"},
        )

    @property
    def events_exchange(self) -> ExchangeSpec:
        """Celery's event exchange of this topology (Celery's ``event_exchange``): task
        and worker events, for Flower, the elasticity worker and the dispatcher."""
        return ExchangeSpec(f"{self.prefix}.events", "topic")

    @property
    def dead_letter_queue(self) -> QueueSpec:
        """Messages a consumer could not read (undecodable, or not a valid message), each
        with the reason in its ``x-carousel-reason`` header, kept for an operator."""
        return QueueSpec(f"{self.prefix}.dead", arguments=self._durable())

    @property
    def mapping_exchange(self) -> ExchangeSpec:
        """Producer -> dispatchers: mapping deltas, each with its version."""
        return ExchangeSpec(f"{self.prefix}.mapping", "fanout")

    def mapping_queue_of(self, dispatcher: str) -> QueueSpec:
        """One dispatcher's own queue on the mapping fanout: gone with its connection."""
        return QueueSpec(
            f"{self.prefix}.mapping.{dispatcher}",
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments={},
            exchange=self.mapping_exchange,
        )

    # -- everything, for tearing a whole topology down -----------------------------
    def durable_queues(self, keys: Iterable[Key], profiles: Iterable[str]) -> list[QueueSpec]:
        """Every durable queue of this topology: the event queues of ``keys``, the
        actions queue of each profile, the completions and dead-letter queues."""
        return [
            *(self.event_queue(k) for k in keys),
            *(self.actions_queue_of(p) for p in dict.fromkeys([DEFAULT_PROFILE, *profiles])),
            self.completions_queue,
            self.dead_letter_queue,
        ]

    def exchanges(self, profiles: Iterable[str]) -> list[ExchangeSpec]:
        """Every exchange of this topology: the mapping fanout, Celery's events and each
        profile's."""
        actions = (self.actions_queue_of(p) for p in dict.fromkeys([DEFAULT_PROFILE, *profiles]))
        return [
            self.mapping_exchange,
            self.events_exchange,
            *(q.exchange for q in actions if q.exchange),
        ]
