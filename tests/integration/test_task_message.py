"""The task message the dispatcher hands over, as the real broker holds it: the arguments
Flower shows are readable, and the wire format the worker reads is unchanged (a message
sent before this change is read the same way)."""

from __future__ import annotations

import json
import time

import kombu

from scheduler.celery_app import TASK_NAME, create_celery
from scheduler.dispatcher.confirms import ConfirmingProducer
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.tasks import TaskSender
from scheduler.worker.poison import parse_arguments
from shared.kombu_topology import queue
from shared.models import Action, VmEventMessage


def test_flower_shows_readable_arguments_and_the_worker_reads_the_same_message(
    amqp_url: str, prefix: str
) -> None:
    settings = DispatcherSettings(AMQP_URL=amqp_url, CAROUSEL_PREFIX=prefix)
    actions = settings.topology.actions_queue
    event = VmEventMessage(
        id="demo-1",
        host="h1",
        vm="h1-vm1",
        policy="ops",
        action=Action.HEAL,
        accepted_at=time.time(),
    )
    dispatch_id = "3f2a9c0d" + "0" * 24
    with kombu.Connection(amqp_url) as conn:
        queue(actions).bind(conn.default_channel).declare()
        TaskSender(settings, create_celery(settings)).send(
            ConfirmingProducer(conn, timeout=10), [event], dispatch_id
        )
        message = conn.default_channel.basic_get(actions.name, no_ack=True)
    assert message is not None
    headers = message.headers
    assert (headers["task"], headers["id"]) == (TASK_NAME, "demo-1")
    # what Flower shows in the task's "args" (the task-sent and task-received events)
    assert headers["argsrepr"] == "heal h1/h1-vm1 (policy ops, dispatch 3f2a9c0d)"
    # the body is as it always was: (event, dispatch id) as positional arguments
    args, kwargs, _ = json.loads(message.body)
    assert kwargs == {}
    assert parse_arguments(tuple(args), kwargs) == (event, dispatch_id)


def test_task_sent_events_publish_flowers_sent_event_with_each_task(
    amqp_url: str, prefix: str
) -> None:
    """TASK_SENT_EVENTS on: beside each task, its task-sent event on the topology's events
    exchange, as Celery's send_task published it (Flower's "sent" state); off: none."""
    for on in (True, False):
        settings = DispatcherSettings(
            AMQP_URL=amqp_url, CAROUSEL_PREFIX=prefix, TASK_SENT_EVENTS=on
        )
        topology = settings.topology
        event = VmEventMessage(
            id=f"sent-{on}",
            host="h1",
            vm="vm1",
            policy="p",
            action=Action.HEAL,
            accepted_at=time.time(),
        )
        with kombu.Connection(amqp_url) as conn:
            channel = conn.default_channel
            queue(topology.actions_queue).bind(channel).declare()
            events = kombu.Exchange(topology.events_exchange.name, "topic", durable=True)
            watch = kombu.Queue(f"{prefix}.watch-sent", events, routing_key="task.sent")
            watch.bind(channel).declare()
            TaskSender(settings, create_celery(settings)).send(
                ConfirmingProducer(conn, timeout=10), [event], "d" * 32
            )
            got = channel.basic_get(watch.name, no_ack=True)
            channel.queue_delete(watch.name)
        if not on:
            assert got is None
            continue
        assert got is not None
        body = json.loads(got.body)
        assert (body["type"], body["uuid"], body["name"]) == ("task-sent", event.id, TASK_NAME)
        assert body["queue"] == topology.actions_queue.name
