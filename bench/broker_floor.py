"""The broker's floor: its CPU per event for the messages alone, with no Carousel logic.

Three roles, each a process of plain kombu, move ``n`` events through the local RabbitMQ
the way Carousel's services do, and nothing else happens to them:

- a *producer* publishes each event, persistent and confirmed (pipelined), to its key's
  durable queue (500 keys);
- a *relay* (the dispatcher's part) consumes every key queue, one head per queue
  (per-consumer prefetch 1), publishes a persistent, confirmed task per head to one
  actions queue, acks the head, and consumes the completions;
- a *worker* consumes the actions queue (prefetch 1, acks late) and per task publishes
  Celery's three task events (received, started, succeeded: transient, to a topic
  exchange), the last of them routed to the completions queue.

The same run measures the pattern of Celery as the throughput benchmark runs it bare
(one persistent task per event, acked on receipt) and under Flower (the same, plus the
three task events, acked late). The broker's CPU per event of each pattern, from
``/proc``, is what its messages cost whatever the processes around them do: a floor for
the end-to-end ratio, since Carousel's processes share the machine's cores with it.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import time
import uuid
from collections.abc import Callable
from typing import Any

import kombu

from bench.common import AMQP_URL, broker_cpu
from bench.report import save
from scheduler.dispatcher.confirms import ConfirmingProducer

KEYS = 500
BODY = {"id": "x" * 32, "host": "h1", "vm": "vm1", "policy": "p", "action": "heal", "payload": {}}
#: Celery's task events per task under Flower; the last one ends the task
TASK_EVENTS = ("task.received", "task.started", "task.succeeded")


def _publish(producer: kombu.Producer, body: Any, key: str) -> None:
    producer.publish(body, routing_key=key, delivery_mode=2)


def _producer(names: dict[str, Any], n: int) -> None:
    with kombu.Connection(AMQP_URL) as conn:
        confirming = ConfirmingProducer(conn)
        for start in range(0, n, 100):  # a request of 100 events, one round of confirms
            confirming.publish_all(
                [
                    functools.partial(_publish, body=BODY, key=names["keys"][i % KEYS])
                    for i in range(start, min(n, start + 100))
                ]
            )


def _relay(names: dict[str, Any], n: int) -> None:
    done = {"completions": 0}
    with kombu.Connection(AMQP_URL) as conn, kombu.Connection(AMQP_URL) as out:
        confirming = ConfirmingProducer(out)
        key_queues = [kombu.Queue(k, durable=True, no_declare=True) for k in names["keys"]]
        completions = kombu.Queue(names["completions"], no_declare=True)
        heads: list[kombu.Message] = []

        def on_head(body: Any, message: kombu.Message) -> None:
            heads.append(message)

        def on_completion(body: Any, message: kombu.Message) -> None:
            message.ack()
            done["completions"] += 1

        ev = conn.channel()
        ev.basic_qos(0, 1, False)
        ctl = conn.channel()
        ctl.basic_qos(0, 500, False)
        with (
            kombu.Consumer(ev, key_queues, callbacks=[on_head], accept=["json"]),
            kombu.Consumer(ctl, [completions], callbacks=[on_completion], accept=["json"]),
        ):
            while done["completions"] < n:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=1)
                # whatever has arrived: one task each, one round of confirms, then acks
                batch, heads[:] = list(heads), []
                if batch:
                    confirming.publish_all(
                        [
                            functools.partial(_publish, body=m.payload, key=names["actions"])
                            for m in batch
                        ]
                    )
                    for m in batch:
                        m.ack()


def _worker(names: dict[str, Any], n: int, events: bool, late: bool) -> None:
    done = [0]
    with kombu.Connection(AMQP_URL) as conn:
        exchange = kombu.Exchange(names["events"], type="topic", durable=False)
        producer = kombu.Producer(conn.channel(), exchange=exchange)

        def on_task(body: Any, message: kombu.Message) -> None:
            if not late:
                message.ack()
            if events:
                for key in TASK_EVENTS:
                    producer.publish({"uuid": "x"}, routing_key=key, delivery_mode=1)
            if late:
                message.ack()
            done[0] += 1

        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        tasks = kombu.Queue(names["actions"], no_declare=True)
        with kombu.Consumer(channel, [tasks], callbacks=[on_task], accept=["json"]):
            while done[0] < n:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=1)


def _declare(names: dict[str, Any]) -> None:
    with kombu.Connection(AMQP_URL) as conn:
        channel = conn.channel()
        for name in [*names["keys"], names["actions"]]:
            channel.queue_declare(name, durable=True, auto_delete=False)
        channel.exchange_declare(names["events"], "topic", durable=False, auto_delete=False)
        channel.queue_declare(names["completions"], durable=True, auto_delete=False)
        channel.queue_bind(names["completions"], names["events"], TASK_EVENTS[-1])


def _delete(names: dict[str, Any]) -> None:
    with kombu.Connection(AMQP_URL) as conn:
        channel = conn.channel()
        for name in [*names["keys"], names["actions"], names["completions"]]:
            channel.queue_delete(name)
        channel.exchange_delete(names["events"])


def _run(roles: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> tuple[float, float]:
    """Start each role in a process and wait for all; returns (seconds, broker CPU s)."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=f, args=a) for f, a in roles]
    cpu, started = broker_cpu(), time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0, f"{p.name} ended with {p.exitcode}"
    return time.perf_counter() - started, broker_cpu() - cpu


def pattern(name: str, n: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    names = {
        "keys": [f"floor-{tag}.k{i}" for i in range(KEYS)],
        "actions": f"floor-{tag}.actions",
        "completions": f"floor-{tag}.completions",
        "events": f"floor-{tag}.events",
    }
    _declare(names)
    try:
        roles: list[tuple[Callable[..., None], tuple[Any, ...]]]
        if name == "carousel":
            roles = [
                (_producer, (names, n)),
                (_relay, (names, n)),
                (_worker, (names, n, True, True)),
            ]
        else:  # Celery: a publisher straight to the actions queue, one worker
            flower = name == "celery under flower"
            roles = [
                (_publish_tasks, (names, n)),
                (_worker, (names, n, flower, flower)),
            ]
        took, cpu = _run(roles)
    finally:
        _delete(names)
    return {
        "pattern": name,
        "events": n,
        "seconds": took,
        "broker CPU ms/event": cpu * 1000 / n,
    }


def _publish_tasks(names: dict[str, Any], n: int) -> None:
    """As Celery's ``send_task``: persistent, unconfirmed."""
    with kombu.Connection(AMQP_URL) as conn:
        producer = kombu.Producer(conn.channel())
        for _ in range(n):
            producer.publish(BODY, routing_key=names["actions"], delivery_mode=2)


def run(n: int = 5000) -> None:
    rows = [pattern(p, n) for p in ("celery bare", "celery under flower", "carousel")]
    save(
        "broker_floor", f"broker CPU per event, the messages alone ({n} events, {KEYS} keys)", rows
    )
