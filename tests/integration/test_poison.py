"""Poison messages: what no handler can read is moved to the dead-letter queue with the
reason, and the dispatcher goes on dispatching (real RabbitMQ, real processes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kombu

from harness.processes import Stack, wait_until
from shared.kombu_topology import queue as kombu_queue
from shared.models import Key
from shared.topology import Topology
from tests.integration.test_e2e import event, post, stats

HEAL = {"host": "h1", "vm": "vm1", "policy": "p", "action": "heal"}


def _depth(amqp_url: str, name: str) -> int:
    with kombu.Connection(amqp_url) as conn:
        _, ready, _ = conn.default_channel.queue_declare(name, passive=True)
        return int(ready)


def test_unreadable_messages_are_dead_lettered_and_dispatching_goes_on(
    stack_factory: Callable[..., Stack], amqp_url: str
) -> None:
    stack = stack_factory()
    stack.producer()
    dispatcher = stack.dispatcher()
    stack.worker()
    topology = Topology(stack.env["CAROUSEL_PREFIX"])
    post(stack, [{**HEAL, "id": "before"}])
    wait_until(lambda: event(stack, "before")["status"] == "succeeded", 60, what="first event")

    key_queue = topology.event_queue_name(Key(host="h1", vm="vm1", policy="p"))
    poison: list[tuple[Any, dict[str, Any]]] = [
        # not JSON: refused by the consumer before any handler sees it
        (b"\x00garbage", {"routing_key": key_queue, "content_type": "application/x-junk"}),
        # JSON, but not an event
        ({"hello": "world"}, {"routing_key": key_queue, "serializer": "json"}),
        # a completion that is not JSON
        (b"nope", {"routing_key": topology.completions_queue.name, "content_type": "text/x"}),
        # a mapping delta that is not one
        ({"version": "x"}, {"exchange": topology.mapping_exchange.name, "serializer": "json"}),
    ]
    with kombu.Connection(amqp_url) as conn:
        producer = conn.Producer()
        for body, options in poison:
            if isinstance(body, bytes):
                options = {**options, "content_encoding": "binary"}
            producer.publish(body, **{"exchange": "", "routing_key": "", **options})

    post(stack, [{**HEAL, "id": "after"}])  # behind the poison, in the same queue
    wait_until(lambda: event(stack, "after")["status"] == "succeeded", 60, what="event after")
    dead = topology.dead_letter_queue.name
    wait_until(lambda: _depth(amqp_url, dead) == 4, 30, what="four dead letters")
    assert stats(stack)["dead_lettered"] == 4

    reasons, bodies = [], []
    with kombu.Connection(amqp_url) as conn:
        bound = kombu_queue(topology.dead_letter_queue)(conn.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            reasons.append(message.headers["x-carousel-reason"])
            bodies.append(message.body)
    assert sum(r.startswith("undecodable event message") for r in reasons) == 1, reasons
    assert sum(r.startswith("invalid event message") for r in reasons) == 1, reasons
    assert sum(r.startswith("undecodable completion message") for r in reasons) == 1, reasons
    assert sum(r.startswith("invalid mapping message") for r in reasons) == 1, reasons
    assert b"\x00garbage" in bodies and b"nope" in bodies  # kept as they came
    log = dispatcher.log_path.read_text()
    assert log.count("dispatcher connected") == 1, "a poison message reset the session"


def test_unreadable_task_messages_are_dead_lettered_and_the_worker_goes_on(
    stack_factory: Callable[..., Stack], amqp_url: str
) -> None:
    """On the actions queue: Celery's own handling would log and drop these (or, for
    wrong arguments, retry them for ever); each is moved to the dead letters instead."""
    from scheduler.celery_app import TASK_NAME, create_celery
    from scheduler.dispatcher.settings import DispatcherSettings

    stack = stack_factory()
    stack.producer()
    stack.dispatcher()
    stack.worker()
    topology = Topology(stack.env["CAROUSEL_PREFIX"])
    actions = topology.actions_queue.name
    app = create_celery(DispatcherSettings(AMQP_URL=amqp_url, CAROUSEL_PREFIX=topology.prefix))
    with kombu.Connection(amqp_url) as conn:
        producer = conn.Producer()
        # not a format the worker accepts
        producer.publish(
            b"\x00junk",
            exchange="",
            routing_key=actions,
            content_type="application/x-junk",
            content_encoding="binary",
        )
        # JSON, but not a Celery task message
        producer.publish({"hello": "world"}, exchange="", routing_key=actions, serializer="json")
    app.send_task("no.such.task", args=[], queue=actions)  # a task nobody registered
    app.send_task(TASK_NAME, args=[{"not": "an event"}, "d1"], queue=actions)
    app.send_task(TASK_NAME, args=[], queue=actions)  # the wrong arity

    post(stack, [{**HEAL, "id": "after"}])
    wait_until(lambda: event(stack, "after")["status"] == "succeeded", 60, what="event after")
    dead = topology.dead_letter_queue.name
    wait_until(lambda: _depth(amqp_url, dead) == 5, 30, what="five dead letters")
    reasons = []
    with kombu.Connection(amqp_url) as conn:
        bound = kombu_queue(topology.dead_letter_queue)(conn.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            reasons.append(message.headers["x-carousel-reason"])
    assert sorted(r.split(":")[0] for r in reasons) == [
        "expected (event, dispatch_id), got 0 arguments and []",
        "not a Celery task message",
        "not an event",
        "undecodable task message",
        "unknown task",
    ], reasons
