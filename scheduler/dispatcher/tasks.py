"""Handing events over to Celery: one task message per event, on its profile's actions
queue, confirmed by the broker before :meth:`TaskSender.send` returns.

The message is Celery's own (protocol 2, built by the app's ``amqp.as_task_v2``), so
workers and Flower read it as any task Celery sends; it is published with kombu
directly, not through ``send_task``, whose routing, signals and options cost about a
fifth of the dispatcher's CPU per event (``make bench BENCH=profile``). Transient by
default (``TASK_PERSISTENT``): the ledger, not the message, holds the truth — a task
lost with a broker restart is sent again by the sweeper (design §7).

The first task of an event has the event's id as its task id (search for it in Flower);
a task sent again by the sweeper gets ``<event id>~<dispatch id>``, so that a revoke
of the first one (Flower keeps revoked ids) does not discard it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import kombu
from celery import Celery
from celery.utils.nodenames import anon_nodename

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
        #: the sender's name in every task's ``origin`` header, as Celery writes it
        self.origin = anon_nodename()
        self.delivery_mode = 2 if settings.task_persistent else 1
        #: TASK_SENT_EVENTS: publishes each task's task-sent event, as send_task would
        self._sent_events = (
            celery.events.Dispatcher(enabled=False) if settings.task_sent_events else None
        )

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
        queue = self.settings.topology.actions_queue_of(self.settings.profile_for(event.action))
        task_id = f"{event.id}{RESEND_MARK}{dispatch_id[:12]}" if again else event.id
        headers, properties, body, sent_event = self.celery.amqp.as_task_v2(
            task_id,
            TASK_NAME,
            args=[event.model_dump(mode="json"), dispatch_id],
            kwargs={},
            # what Flower shows as the arguments, instead of the raw event and hex id
            argsrepr=(
                f"{event.action} {event.host}/{event.vm} (policy {event.policy}, "
                f"dispatch {dispatch_id[:8]})"
            ),
            kwargsrepr="{}",
            origin=self.origin,
            ignore_result=True,
            create_sent_event=self._sent_events is not None,
        )

        def send(p: kombu.Producer) -> None:
            p.publish(
                body,
                exchange="",  # the default exchange, as Celery sends to a direct queue
                routing_key=queue.name,
                serializer="json",
                headers=headers,
                delivery_mode=self.delivery_mode,
                mandatory=True,
                **properties,
            )
            if self._sent_events is not None and sent_event is not None:  # Flower's "sent"
                sent_event.update(queue=queue.name, exchange="", routing_key=queue.name)
                self._sent_events.publish("task-sent", sent_event, p)

        return send
