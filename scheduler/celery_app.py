"""The Celery app every role shares: built by a factory (never at import time), and the
name of Carousel's one task.

The dispatcher sends that task, the workers register and run it
(:mod:`scheduler.worker.task`), the elasticity worker and Flower watch its events and
control the workers, and the worker's healthcheck (:mod:`scheduler.worker.ping`) pings
them: all through an app built here, on the same broker, queues and event exchange.
"""

from __future__ import annotations

from celery import Celery

from shared.kombu_topology import queue
from shared.settings import CommonSettings

TASK_NAME = "carousel.execute"


def create_celery(settings: CommonSettings) -> Celery:
    topology = settings.topology
    queues = [queue(topology.actions_queue_of(p)) for p in settings.profiles]
    app = Celery("carousel", broker=settings.amqp_url, set_as_current=False)
    app.conf.update(
        task_queues=queues,
        task_default_queue=topology.actions_queue.name,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        # On connection loss the broker redelivers unacked tasks, but the claim's lease
        # (in the ledger, not on this connection) keeps a second copy from running while
        # ours lives: let ours finish and record its outcome. Cancelling it would kill
        # an action that may have had its effect, to be run again once its claim expires.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # the task events are Flower's, and the dispatcher's completions: a task-succeeded
        # event frees the event's slot (see Topology.completions_queue)
        worker_send_task_events=True,
        event_exchange=topology.events_exchange.name,
        # task-sent: the dispatcher would publish one more message per task, only for
        # Flower's "sent" state (its "received" state comes from the worker)
        task_send_sent_event=getattr(settings, "task_sent_events", False),
        task_serializer="json",
        accept_content=["json"],
        # A task event lost on the way (events are not confirmed) only delays freeing a
        # slot until the dispatcher's reconcile (RECONCILE_INTERVAL).
        broker_connection_retry_on_startup=True,
        broker_heartbeat=30,
        worker_hijack_root_logger=True,
        enable_utc=True,
    )
    return app
