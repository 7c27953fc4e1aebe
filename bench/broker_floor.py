"""The broker's floor: its CPU per event for the messages alone, with no Carousel logic,
by message kind.

Three roles, each a process of plain kombu, move ``n`` events through the local RabbitMQ
the way Carousel's services do, and nothing else happens to them:

- a *producer* publishes each event, persistent and confirmed (pipelined, 100 a
  request), to its key's durable queue (500 keys);
- a *relay* (the dispatcher's part) consumes every key queue, one head per queue
  (per-consumer prefetch 1), drains what has arrived as the dispatcher's loop does (up
  to a dispatch batch), publishes a transient, confirmed task per head to one actions
  queue (``TASK_PERSISTENT`` off), acks the heads, and consumes the completions;
- a *worker* consumes the actions queue (prefetch 1, acks late) and per task publishes
  Celery's three task events (received, started, succeeded: transient, to a topic
  exchange), the last of them routed to the completions queue.

Carousel's pattern is run built up one message kind at a time (:data:`STEPS`): the
event's publish and confirm alone, then its consume and ack, the task, the completion,
Flower's other task events — each step less the one before is what that kind costs per
event. Beside them (:data:`EXTRA`): every key new (the producer declares its queue and
announces it in a mapping delta, the dispatcher declares and consumes it), and the
pattern as it was before, with persistent task messages.

The same run measures the pattern of Celery as the throughput benchmark runs it bare
(one persistent task per event, acked on receipt) and under Flower (the same, plus the
three task events, acked late). Every pattern runs :data:`ROUNDS` times, interleaved, and
the least broker CPU of its rounds is kept: the machine and the broker are shared, and
other work only ever adds to a round's figure. The broker's CPU per event of
each pattern, from ``/proc``, is what its messages cost whatever the processes around
them do: a floor for the end-to-end ratio, since Carousel's processes share the
machine's cores with it.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kombu

from bench.common import AMQP_URL, broker_cpu, declare_queues
from bench.report import save
from scheduler.dispatcher.confirms import ConfirmingProducer
from scheduler.dispatcher.loop import DRAIN_MORE

KEYS = 500
BODY = {"id": "x" * 32, "host": "h1", "vm": "vm1", "policy": "p", "action": "heal", "payload": {}}
#: Celery's task events per task under Flower; the last one ends the task
TASK_EVENTS = ("task.received", "task.started", "task.succeeded")
#: rounds of every pattern, interleaved: the least broker CPU of its rounds is kept (the
#: broker is shared: other work on it only ever adds to a round's figure)
ROUNDS = 4
#: the dispatcher's default DISPATCH_BATCH
DISPATCH_BATCH = 64


@dataclass(frozen=True)
class Shape:
    """Which of Carousel's messages a run of its pattern moves, and how."""

    #: the dispatcher consumes each event (one head per key queue) and acks it
    consume: bool = True
    #: ... and publishes a confirmed task per head, which a worker consumes, acking late
    task: bool = True
    #: the task message's delivery mode: 1 transient (Carousel's, TASK_PERSISTENT
    #: off), 2 persistent
    task_mode: int = 1
    #: the worker's task events per task (the last one is the completion); none: the
    #: dispatcher counts its acks instead
    events: tuple[str, ...] = TASK_EVENTS
    #: every key is new: the producer declares its queue before its first event and
    #: announces a request's new keys in one delta on the mapping fanout; the dispatcher
    #: declares each again and consumes it once the delta arrives (else every queue
    #: exists and is consumed from the start)
    new_keys: bool = False


#: Carousel's pattern built up one message kind at a time: each step's broker CPU less
#: the step before it is what that kind costs per event. The keys exist already (a
#: system that runs for a while): what a new key costs is the row after them.
STEPS: list[tuple[str, Shape]] = [
    ("event: publish + confirm", Shape(consume=False, task=False, events=())),
    ("event: consume + ack", Shape(task=False, events=())),
    ("task: publish + confirm, consume + ack", Shape(events=())),
    ("completion (task-succeeded)", Shape(events=TASK_EVENTS[-1:])),
    ("task-received, task-started (Flower's)", Shape()),
]
#: beside the steps: the whole pattern with every key new (one per KEYS events ÷ n),
#: and as it was with persistent task messages (TASK_PERSISTENT=true)
EXTRA: list[tuple[str, Shape]] = [
    ("new keys: declare, announce, consume", Shape(new_keys=True)),
    ("before: persistent tasks", Shape(task_mode=2)),
]


def _publish(producer: kombu.Producer, body: Any, key: str, mode: int = 2) -> None:
    producer.publish(body, routing_key=key, delivery_mode=mode)


def _producer(names: dict[str, Any], n: int, shape: Shape) -> None:
    with kombu.Connection(AMQP_URL) as conn:
        confirming = ConfirmingProducer(conn)
        mapping = kombu.Exchange(names["mapping"], type="fanout", durable=True)
        announced: set[str] = set()
        for start in range(0, n, 100):  # a request of 100 events, one round of confirms
            keys = [names["keys"][i % KEYS] for i in range(start, min(n, start + 100))]
            if shape.new_keys:  # as the producer: declare the new ones, pipelined, then
                new = [k for k in dict.fromkeys(keys) if k not in announced]
                announced.update(new)
                if new:
                    declare_queues(confirming.channel, new)
            sends: list[Callable[[kombu.Producer], Any]] = [
                functools.partial(_publish, body=BODY, key=k) for k in keys
            ]
            if shape.new_keys and new:  # ... publish, and announce them in one delta
                sends.append(functools.partial(_announce, exchange=mapping, keys=new))
            confirming.publish_all(sends)


def _announce(producer: kombu.Producer, exchange: kombu.Exchange, keys: list[str]) -> None:
    producer.publish({"op": "keys_added", "keys": keys}, exchange=exchange, delivery_mode=2)


def _relay(names: dict[str, Any], n: int, shape: Shape) -> None:
    done = {"completions": 0, "acked": 0}
    completed = "completions" if shape.events else "acked"
    with kombu.Connection(AMQP_URL) as conn, kombu.Connection(AMQP_URL) as out:
        confirming = ConfirmingProducer(out)
        known = [] if shape.new_keys else names["keys"]
        key_queues = [kombu.Queue(k, durable=True, no_declare=True) for k in known]
        completions = kombu.Queue(names["completions"], no_declare=True)
        deltas = kombu.Queue(names["deltas"], no_declare=True)
        heads: list[kombu.Message] = []
        added: list[str] = []

        def on_head(body: Any, message: kombu.Message) -> None:
            heads.append(message)

        ev = conn.channel()
        ev.basic_qos(0, 1, False)
        ctl = conn.channel()
        ctl.basic_qos(0, 500, False)
        events = kombu.Consumer(ev, key_queues, callbacks=[on_head], accept=["json"])

        def on_control(body: Any, message: kombu.Message) -> None:
            message.ack()
            if "keys" in body:  # a delta: followed in the loop's body
                added.extend(body["keys"])
            else:
                done["completions"] += 1

        with (
            events,
            kombu.Consumer(ctl, [completions, deltas], callbacks=[on_control], accept=["json"]),
        ):
            while done[completed] < n:
                _drain(conn)
                if added:  # as the dispatcher's mapping follower: declare, then consume
                    for key in added:
                        bound = kombu.Queue(key, durable=True)(ev)
                        bound.declare(nowait=True)
                        events.add_queue(bound)
                    added.clear()
                    events.consume()
                # whatever has arrived: one task each, one round of confirms, then acks
                batch, heads[:] = list(heads), []
                if batch and shape.task:
                    confirming.publish_all(
                        [
                            functools.partial(
                                _publish, body=m.payload, key=names["actions"], mode=shape.task_mode
                            )
                            for m in batch
                        ]
                    )
                for m in batch:
                    m.ack()
                done["acked"] += len(batch)


def _drain(conn: kombu.Connection) -> None:
    """As the dispatcher's loop drains: wait for a delivery, then take what else has
    arrived meanwhile, up to a dispatch batch (``scheduler.dispatcher.loop``)."""
    try:
        conn.drain_events(timeout=1)
    except TimeoutError:
        return
    for _ in range(DISPATCH_BATCH):
        try:
            conn.drain_events(timeout=DRAIN_MORE)
        except TimeoutError:
            return


def _worker(names: dict[str, Any], n: int, events: tuple[str, ...], late: bool) -> None:
    done = [0]
    with kombu.Connection(AMQP_URL) as conn:
        exchange = kombu.Exchange(names["events"], type="topic", durable=False)
        producer = kombu.Producer(conn.channel(), exchange=exchange)

        def on_task(body: Any, message: kombu.Message) -> None:
            if not late:
                message.ack()
            for key in events:
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


def _declare(names: dict[str, Any], keys: bool) -> None:
    with kombu.Connection(AMQP_URL) as conn:
        channel = conn.channel()
        declare_queues(
            channel, [*(names["keys"] if keys else []), names["actions"], names["completions"]]
        )
        channel.exchange_declare(names["events"], "topic", durable=False, auto_delete=False)
        channel.queue_bind(names["completions"], names["events"], TASK_EVENTS[-1])
        channel.exchange_declare(names["mapping"], "fanout", durable=True, auto_delete=False)
        channel.queue_declare(names["deltas"], auto_delete=False)
        channel.queue_bind(names["deltas"], names["mapping"], "")


def _delete(names: dict[str, Any]) -> None:
    with kombu.Connection(AMQP_URL) as conn:
        channel = conn.channel()
        for name in [*names["keys"], names["actions"], names["completions"], names["deltas"]]:
            channel.queue_delete(name)
        channel.exchange_delete(names["events"])
        channel.exchange_delete(names["mapping"])


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


def _roles(pattern: str | Shape, names: dict[str, Any], n: int) -> list[Any]:
    if isinstance(pattern, Shape):
        roles: list[Any] = [(_producer, (names, n, pattern))]
        if pattern.consume:
            roles.append((_relay, (names, n, pattern)))
        if pattern.task:
            roles.append((_worker, (names, n, pattern.events, True)))
        return roles
    # Celery: a publisher straight to the actions queue, one worker
    flower = pattern == "celery under flower"
    return [
        (_publish_tasks, (names, n)),
        (_worker, (names, n, TASK_EVENTS if flower else (), flower)),
    ]


def measure(pattern: str | Shape, n: int) -> tuple[float, float]:
    """One run of a pattern (Celery's by name, or a shape of Carousel's) over fresh
    queues: (seconds, broker CPU ms per event)."""
    tag = uuid.uuid4().hex[:8]
    names = {
        "keys": [f"floor-{tag}.k{i}" for i in range(KEYS)],
        "actions": f"floor-{tag}.actions",
        "completions": f"floor-{tag}.completions",
        "events": f"floor-{tag}.events",
        "mapping": f"floor-{tag}.mapping",
        "deltas": f"floor-{tag}.deltas",
    }
    _declare(names, keys=not (isinstance(pattern, Shape) and pattern.new_keys))
    try:
        took, cpu = _run(_roles(pattern, names, n))
    finally:
        _delete(names)
    return took, cpu * 1000 / n


def _publish_tasks(names: dict[str, Any], n: int) -> None:
    """As Celery's ``send_task``: persistent, unconfirmed."""
    with kombu.Connection(AMQP_URL) as conn:
        producer = kombu.Producer(conn.channel())
        for _ in range(n):
            producer.publish(BODY, routing_key=names["actions"], delivery_mode=2)


def patterns() -> dict[str, str | Shape]:
    """The patterns of a run: Celery's two, Carousel's built up step by step (the last
    step is Carousel's whole pattern), then the extra rows."""
    return {
        "celery bare": "celery bare",
        "celery under flower": "celery under flower",
        **{f"carousel: + {kind}": shape for kind, shape in STEPS},
        **{f"carousel, {kind}": shape for kind, shape in EXTRA},
    }


def run(n: int = 5000, rounds: int = ROUNDS) -> None:
    """Every pattern ``rounds`` times, interleaved (round 1 of each, then round 2, ...),
    and the least of each pattern's rounds kept: whatever else the shared broker does
    meanwhile only adds to a round's CPU, so the least is the nearest to its own cost."""
    todo = patterns()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in todo}
    for _ in range(rounds):
        for name, pattern in todo.items():
            runs[name].append(measure(pattern, n))
    ms = {name: min(cpu for _, cpu in r) for name, r in runs.items()}
    steps = [f"carousel: + {kind}" for kind, _ in STEPS]
    whole = ms[steps[-1]]
    flower = ms["celery under flower"]
    rows: list[dict[str, Any]] = []
    before = 0.0
    for name in todo:
        added: float | str = ""
        if name in steps:
            added, before = ms[name] - before, ms[name]
        elif name.startswith("carousel"):
            added = ms[name] - whole  # beside the whole pattern
        rows.append(
            {
                "pattern": name,
                "events": n,
                "seconds": statistics.median(took for took, _ in runs[name]),
                "broker CPU ms/event": ms[name],
                "this kind ms/event": added,
                "share of Carousel's": f"{added / whole:.0%}" if isinstance(added, float) else "",
                "÷ Celery under Flower": ms[name] / flower,
                "runs ms/event": " / ".join(f"{cpu:.2f}" for _, cpu in runs[name]),
            }
        )
    save(
        "broker_floor",
        f"broker CPU per event, the messages alone, by message kind ({n} events, {KEYS} "
        f"keys, least of {rounds} interleaved rounds; Carousel ÷ Celery under Flower "
        f"{whole / flower:.2f}x)",
        rows,
        # what the goals table reads: Carousel's whole pattern (its keys known) and Celery's
        ms={"carousel": whole, "celery bare": ms["celery bare"], "celery under flower": flower},
    )
