"""Poison task messages: a message on an actions queue that the worker cannot run is
moved to the dead-letter queue with the reason, not dropped (Celery's own handling logs
and discards it) nor retried for ever.

Celery's worker consumer calls one hook per kind of unreadable message; the
:class:`DeadLetteringConsumer` (``worker_consumer``) copies the message to
``<prefix>.dead``, confirmed, before Celery's own hook acks or rejects it. A message
that names our task but whose arguments are not an event and a dispatch id is caught in
the task itself (:func:`parse_arguments`) and moved the same way.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from celery import Celery
from celery.worker.consumer import Consumer
from pydantic import ValidationError

from shared.kombu_topology import publish_confirmed
from shared.models import VmEventMessage
from shared.topology import DEAD_ORIGIN, DEAD_REASON, QueueSpec

log = logging.getLogger(__name__)

#: the app setting naming the dead-letter queue (set by :func:`install`)
DEAD_QUEUE_SETTING = "carousel_dead_letter_queue"


class PoisonArguments(ValueError):
    """A task message for our task whose arguments are not (event, dispatch id)."""


def install(app: Celery, dead: QueueSpec) -> None:
    """Make ``app``'s workers dead-letter what they cannot read into ``dead``."""
    app.conf.worker_consumer = f"{__name__}:DeadLetteringConsumer"
    app.conf[DEAD_QUEUE_SETTING] = dead


def parse_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[VmEventMessage, str]:
    """The task's (event, dispatch id), or :class:`PoisonArguments` saying what is wrong."""
    if kwargs or len(args) != 2:
        raise PoisonArguments(
            f"expected (event, dispatch_id), got {len(args)} arguments and {sorted(kwargs)}"
        )
    event, dispatch_id = args
    if not isinstance(dispatch_id, str):
        raise PoisonArguments(f"dispatch_id is not a string: {dispatch_id!r}"[:300])
    try:
        return VmEventMessage.model_validate(event), dispatch_id
    except ValidationError as exc:
        raise PoisonArguments(f"not an event: {exc}") from exc


def dead_letter(
    app: Celery,
    body: Any,
    reason: str,
    content_type: str | None = None,
    content_encoding: str | None = None,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish ``body`` with the reason to the dead-letter queue; returns once the broker
    confirmed it (raises otherwise: the caller must not drop the original then). Also
    the copy of an event that ran out of attempts or time."""
    dead: QueueSpec = app.conf[DEAD_QUEUE_SETTING]
    publish_confirmed(
        app.conf.broker_url,
        dead,
        body,
        headers={**(headers or {}), DEAD_REASON: reason[:1000], DEAD_ORIGIN: "celery-worker"},
        content_type=content_type,
        content_encoding=content_encoding,
        serializer=None if content_type else "json",
    )
    log.warning("moved a task message to %s: %s", dead.name, reason)


def _copy(app: Celery, message: Any, reason: str) -> None:
    dead_letter(
        app,
        message.body,
        reason,
        message.content_type or "application/octet-stream",
        message.content_encoding or "binary",
        dict(message.headers or {}),
    )


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    """Celery's worker consumer, which first copies unreadable messages to the dead
    letters, and runs without native delayed delivery: Carousel sends no ETA or
    countdown task, and that step, which Celery adds when the queues are quorum queues,
    connects to every node of a cluster's AMQP_URL in turn, retrying a dead one for
    about 15 s before the worker consumes again (seen when a node was killed)."""

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        default_steps: ClassVar[list[str]] = [
            step
            for step in Consumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        ]

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _copy(self.app, message, f"undecodable task message: {exc!r}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _copy(self.app, message, "not a Celery task message")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        _copy(self.app, message, f"unknown task: {exc!r}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _copy(self.app, message, f"invalid task message: {exc!r}")
        super().on_invalid_task(body, message, exc)
