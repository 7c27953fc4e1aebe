"""The dead-letter record, for operators: events that ended failed because they ran out
of attempts (``MAX_ATTEMPTS``) or of time (``ACTION_TIME_LIMIT``), listed from the ledger
and re-driven on request.

A re-drive puts the event back to ``queued`` with its attempts reset and publishes it,
confirmed, to its key's event queue, where it takes its turn like a new event. If the
publish fails, the event is dead-lettered again and the caller gets the error. An event
whose VM was removed from the mapping meanwhile is not re-driven (the ledger raises
:class:`shared.errors.VmRemoved`): publishing would declare its queue again, and no
dispatcher consumes it. One whose key was retired (idle) brings the key back, as a new
event would. (Messages
no consumer could read are in the dead-letter *queue*; they have no ledger row to
re-drive: re-post such an event to the producer.)
"""

from __future__ import annotations

from typing import Any

from scheduler.dispatcher.errors import NotDeadLettered, RedriveFailed
from shared.kombu_topology import publish_confirmed, publish_delta
from shared.models import VmEventMessage
from shared.settings import CommonSettings
from shared.store import Store


class DeadLetters:
    def __init__(self, store: Store, settings: CommonSettings) -> None:
        self.store = store
        self.settings = settings

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return [_view(row) for row in self.store.dead_letters(limit)]

    def redrive(self, event_id: str) -> VmEventMessage:
        """Raises :class:`NotDeadLettered`, :class:`VmRemoved` (nothing changed), or
        :class:`RedriveFailed` (dead-lettered again)."""
        event, delta = self.store.redrive_keyed(event_id)
        if event is None:
            raise NotDeadLettered(f"event {event_id} is not dead-lettered")
        try:
            if delta is not None:  # its key was retired: the dispatcher consumes it again
                publish_delta(self.settings.amqp_url, self.settings.topology, delta)
            self._publish(event)
        except Exception as exc:
            self.store.undo_redrive(event_id, f"re-drive failed: {exc!r}")
            raise RedriveFailed(f"could not publish event {event_id}: {exc!r}") from exc
        return event

    def _publish(self, event: VmEventMessage) -> None:
        publish_confirmed(
            self.settings.amqp_url,
            self.settings.topology.event_queue(event.key),
            event.model_dump_json(),
            content_type="application/json",
            content_encoding="utf-8",
            message_id=event.id,
            mandatory=True,
        )


def _view(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "host", "vm", "policy", "action", "error", "attempts", "worker", "dead_at")
    return {k: row[k] for k in keep}
