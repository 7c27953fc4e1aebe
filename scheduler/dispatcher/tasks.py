"""Handing events over to Celery: one task message per event, on its profile's actions
queue, confirmed by the broker before :meth:`TaskSender.send` returns.

The first task of an event has the event's id as its task id (search for it in Flower);
a task sent again by the sweeper gets ``<event id>~<dispatch id>``, so that a revoke
of the first one (Flower keeps revoked ids) does not discard it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import kombu
from celery import Celery

from scheduler.celery_app import TASK_NAME
from scheduler.dispatcher.confirms import ConfirmingProducer
from scheduler.dispatcher.settings import DispatcherSettings
from shared.models import VmEventMessage

#: between the event id and the dispatch id in a resent task's id: never part of an event
#: id (see shared.names), and safe in a URL (Flower's task pages)
RESEND_MARK = "~"


def event_id_of(task_id: str) -> str:
    """The event a task id belongs to."""
    return task_id.split(RESEND_MARK, 1)[0]


class TaskSender:
    def __init__(self, settings: DispatcherSettings, celery: Celery) -> None:
        self.settings = settings
        self.celery = celery

    def send(
        self,
        producer: ConfirmingProducer,
        batch: Sequence[VmEventMessage],
        dispatch_id: str,
        again: bool = False,
    ) -> None:
        """Publish a task per event with pipelined confirms; ``again``: the events had a
        task before (a sweeper's resend), so the task ids are new."""
        producer.publish_all([self._send(e, dispatch_id, again) for e in batch])

    def _send(
        self, event: VmEventMessage, dispatch_id: str, again: bool
    ) -> Callable[[kombu.Producer], Any]:
        topology = self.settings.topology
        queue = topology.actions_queue_of(self.settings.profile_for(event.action))
        task_id = f"{event.id}{RESEND_MARK}{dispatch_id[:12]}" if again else event.id
        return lambda p: self.celery.send_task(
            TASK_NAME,
            args=[event.model_dump(mode="json"), dispatch_id],
            # what Flower shows as the arguments, instead of the raw event and hex id
            argsrepr=(
                f"{event.action} {event.host}/{event.vm} (policy {event.policy}, "
                f"dispatch {dispatch_id[:8]})"
            ),
            task_id=task_id,
            queue=queue.name,
            producer=p,
            mandatory=True,
        )
