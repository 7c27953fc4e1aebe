"""Faults made of messages and requests: duplicate posts and deliveries, garbage on every
queue the system consumes, poison actions, an event queue deleted under the producer, a
re-drive of an event whose VM was removed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import wait
from contextlib import contextmanager, suppress
from typing import Any

import httpx
from celery import Celery

from harness.faults.accounting import VIOLATION, Anomaly
from harness.faults.base import Ctx, FaultResult
from harness.faults.stack import FaultStack
from harness.processes import wait_until
from shared.models import Key, VmEventMessage

FINAL = ("succeeded", "failed")


def _ledger_event(stack: FaultStack, event_id: str) -> VmEventMessage:
    [row] = stack.ledger.rows(
        "SELECT id, host, vm, policy, action, payload, accepted_at FROM events WHERE id = :id",
        id=event_id,
    )
    return VmEventMessage(
        id=row[0],
        host=row[1],
        vm=row[2],
        policy=row[3],
        action=row[4],
        payload=json.loads(row[5]),
        accepted_at=row[6],
    )


def _queue_of(stack: FaultStack, event: VmEventMessage) -> str:
    return stack.topology.event_queue_name(event.key)


@contextmanager
def _celery(stack: FaultStack) -> Iterator[Celery]:
    """A Celery app on the stack's broker and topology, to publish task messages."""
    from scheduler.celery_app import create_celery
    from scheduler.dispatcher.settings import DispatcherSettings

    settings = DispatcherSettings(amqp_url=stack.broker.url, carousel_prefix=stack.topology.prefix)
    app = create_celery(settings)
    try:
        yield app
    finally:
        app.close()


def _send_task(app: Celery, stack: FaultStack, name: str, args: list[Any], task_id: str) -> None:
    with app.producer_or_acquire() as producer:
        app.send_task(
            name,
            args=args,
            task_id=task_id,
            queue=stack.topology.actions_queue.name,
            producer=producer,
        )


def _publish(stack: FaultStack, messages: list[tuple[Any, dict[str, Any]]]) -> None:
    """Publish raw ``(body, options)`` pairs; bytes bodies go as they are."""
    with stack.amqp() as conn:
        producer = conn.Producer()
        for body, options in messages:
            if isinstance(body, bytes):
                options = {"content_encoding": "binary", **options}
            else:
                options = {"serializer": "json", **options}
            producer.publish(body, **{"exchange": "", "routing_key": "", **options})


def _wait_final(ctx: Ctx, ids: list[str], timeout: float) -> dict[str, str]:
    statuses: dict[str, str] = {}

    def final() -> bool:
        for i in ids:
            if statuses.get(i) not in FINAL:
                got = ctx.stack.event(i)
                statuses[i] = got["status"] if got else "unknown"
        return all(statuses.get(i) in FINAL for i in ids)

    with suppress(AssertionError):
        wait_until(final, timeout, 0.2, what="events final")
    return statuses


def _finished_load_events(ctx: Ctx, n: int) -> list[str]:
    done = [
        i
        for (i,) in ctx.stack.ledger.rows(
            "SELECT id FROM events WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT :n",
            n=n * 3,
        )
        if ctx.load.accepted.get(i) is not None and ctx.load.accepted[i].kind == "load"
    ]
    return done[:n]


# -- duplicates --------------------------------------------------------------------
def duplicate_posts(ctx: Ctx) -> FaultResult:
    """Post the same ids again: accepted ones in a batch, the same batch from three
    threads at once, fresh ids from three threads at once, one id twice in a batch."""
    res = FaultResult("duplicate posts")
    injected = time.time()
    old = [ctx.load.sent[i] for i in _finished_load_events(ctx, 20)]
    ctx.load.post(old, "dup-repost")
    wait([ctx.load.post_async(old, "dup-repost") for _ in range(3)], timeout=120)
    fresh = ctx.load.make(10)
    wait([ctx.load.post_async(fresh, "load") for _ in range(3)], timeout=120)
    [twice] = ctx.load.make(1)
    ctx.load.post([twice, twice], "load")
    res.injected = 1 + 3 + 2 + 1  # duplicate posts beyond each id's first
    res.recoveries.append(ctx.recovery(injected, injected))
    return res


def duplicate_deliveries(ctx: Ctx) -> FaultResult:
    """Copies of event messages straight into their event queues, and second Celery task
    messages (new dispatch ids) on the actions queue — for events still waiting or
    running and for finished ones."""
    from scheduler.celery_app import TASK_NAME

    res = FaultResult("duplicate deliveries")
    injected = time.time()
    fresh = ctx.load.post(ctx.load.make(10, {"hold": 0.3}), "load")
    old = _finished_load_events(ctx, 10)
    events = [_ledger_event(ctx.stack, i) for i in fresh + old]
    _publish(
        ctx.stack,
        [
            (
                e.model_dump_json().encode(),
                {
                    "routing_key": _queue_of(ctx.stack, e),
                    "content_type": "application/json",
                    "content_encoding": "utf-8",
                },
            )
            for e in events
        ],
    )
    again = events[:5] + events[len(fresh) : len(fresh) + 5]
    with _celery(ctx.stack) as app:
        for e in again:
            _send_task(app, ctx.stack, TASK_NAME, [e.model_dump(mode="json"), "dup"], e.id)
    res.injected = len(events) + len(again)
    if len(fresh) < 10:
        res.note = f"only {len(fresh)} of 10 fresh events accepted"
    res.recoveries.append(ctx.recovery(injected, injected))
    return res


# -- garbage -----------------------------------------------------------------------
def garbage(ctx: Ctx) -> FaultResult:
    """Non-JSON and wrong-schema bodies, and well-formed ones the system never issued
    (an unknown event id, a completion for an event still running), on every queue the
    system consumes: event queues, completions, the mapping fanout, the actions queue."""
    from scheduler.celery_app import TASK_NAME

    stack = ctx.stack
    res = FaultResult("garbage messages")
    injected = time.time()
    junk = {"content_type": "application/x-junk"}
    messages: list[tuple[Any, dict[str, Any]]] = []
    for host, vm, policy in ctx.rng.sample(ctx.load.keys, 3):
        key = Key(host=host, vm=vm, policy=policy)
        queue = stack.topology.event_queue_name(key)
        forged = VmEventMessage(
            id=f"forged-{uuid.uuid4().hex[:8]}",
            host=host,
            vm=vm,
            policy=policy,
            action="heal",
            accepted_at=time.time(),
        )
        messages += [
            (b"\x00garbage", {"routing_key": queue, **junk}),
            (b"{not json", {"routing_key": queue, "content_type": "application/json"}),
            ({"hello": "world"}, {"routing_key": queue}),
            (
                forged.model_dump_json().encode(),
                {"routing_key": queue, "content_type": "application/json"},
            ),
        ]
    completions = stack.topology.completions_queue.name
    running = [c for c in stack.receiver.open_calls() if c.poison is None]
    victim = running[0] if running else None
    messages += [
        (b"nope", {"routing_key": completions, "content_type": "text/x"}),
        ({"event_id": 7}, {"routing_key": completions}),
        (
            {
                "event_id": victim.event_id if victim else "forged-running",
                "host": victim.host if victim else "h0",
                "vm": victim.vm if victim else "vm0",
                "policy": "p0",
                "status": "succeeded",
            },
            {"routing_key": completions},
        ),
    ]
    mapping = stack.topology.mapping_exchange.name
    messages += [
        (b"\xff\xfe", {"exchange": mapping, **junk}),
        ({"version": "x"}, {"exchange": mapping}),
        (
            {"version": 10**9, "op": "host_availability", "host": "h0", "available": False},
            {"exchange": mapping},
        ),
    ]
    actions = stack.topology.actions_queue.name
    messages += [
        (b"\x00\x01", {"routing_key": actions, **junk}),
        ({"not": "a task"}, {"routing_key": actions}),
    ]
    _publish(stack, messages)
    forged_task = VmEventMessage(
        id=f"forged-task-{uuid.uuid4().hex[:8]}",
        host="h0",
        vm="vm0",
        policy="p0",
        action="heal",
        accepted_at=time.time(),
    ).model_dump(mode="json")
    with _celery(stack) as app:
        _send_task(app, stack, "carousel.no-such-task", [1, 2], f"garbage-{uuid.uuid4().hex[:8]}")
        _send_task(app, stack, TASK_NAME, [{"id": 5}, "x"], f"garbage-{uuid.uuid4().hex[:8]}")
        _send_task(app, stack, TASK_NAME, [forged_task, "forged"], forged_task["id"])
    res.injected = len(messages) + 3
    if victim:
        ctx.log(f"  forged a completion for {victim.event_id}, still running")
    res.recoveries.append(ctx.recovery(injected, injected))
    return res


# -- poison actions ----------------------------------------------------------------
def poison(ctx: Ctx, fail: int = 3, kill: int = 2) -> FaultResult:
    """Events whose action always fails (webhook 500) and whose action always kills its
    worker (the receiver has the harness kill the pool child making the call): both
    must end ``failed``, the latter after MAX_ATTEMPTS, and free their VMs."""
    res = FaultResult("poison actions")
    injected = time.time()
    fails = [ctx.load.make(1, {"poison": "fail"})[0] for _ in range(fail)]
    kills = [ctx.load.make(1, {"poison": "kill"})[0] for _ in range(kill)]
    ids = ctx.load.post(fails, "poison-fail") + ctx.load.post(kills, "poison-kill")
    res.injected = len(ids)
    if not ids:
        res.note = "the poison events were refused"
    res.recoveries.append(ctx.recovery(injected, injected))
    statuses = _wait_final(ctx, ids, 150)
    wrong = {i: s for i, s in statuses.items() if s != "failed"}
    if wrong:
        res.note = f"poison events not failed: {wrong}"
    return res


# -- topology ----------------------------------------------------------------------
QUEUE_DELETE_KEY = ("hq", "vmq", "pq")


def queue_delete(ctx: Ctx) -> FaultResult:
    """Delete an event queue (empty, on a key of its own) through the broker behind the
    producer's back; the next event for that key must be accepted and run."""
    stack = ctx.stack
    res = FaultResult("event queue deleted")
    host, vm, policy = QUEUE_DELETE_KEY
    [first] = ctx.load.post(ctx.load.make(1, key=QUEUE_DELETE_KEY), "queue-delete")
    _wait_final(ctx, [first], 60)
    name = stack.topology.event_queue_name(Key(host=host, vm=vm, policy=policy))
    with stack.amqp() as conn:
        conn.channel().queue_delete(name, if_empty=True)
    injected = time.time()
    res.injected = 1
    ctx.log(f"  deleted {name}")
    [second] = ctx.load.post(ctx.load.make(1, key=QUEUE_DELETE_KEY), "queue-delete")
    statuses = _wait_final(ctx, [second], 60)
    [(dispatched_at,)] = stack.ledger.rows(
        "SELECT dispatched_at FROM events WHERE id = :id", id=second
    )
    if statuses.get(second) not in FINAL:
        res.note = f"the event posted after the deletion is {statuses.get(second)} after 60 s"
    res.recoveries.append(None if dispatched_at is None else dispatched_at - injected)
    return res


# -- re-drive ----------------------------------------------------------------------
REDRIVE_REMOVED_KEY = ("hr", "vmr", "pr")


def redrive_removed(ctx: Ctx) -> FaultResult:
    """Dead-letter an event of a VM of its own, remove the VM, re-drive the event: the
    dispatcher must refuse (409), the event stay ``failed``, and no message go into the
    removed VM's queue (a re-drive that declares it again queues the event where no
    dispatcher consumes it). Otherwise a violation is counted. The event fails through
    its action (webhook 500); it is then marked dead-lettered in the ledger as running
    out of attempts would (which takes ``MAX_ATTEMPTS`` claim leases)."""
    stack = ctx.stack
    res = FaultResult("re-drive of a removed VM's event")
    host, vm, policy = REDRIVE_REMOVED_KEY
    [event] = ctx.load.make(1, {"poison": "fail"}, key=REDRIVE_REMOVED_KEY)
    ids = ctx.load.post([event], "poison-fail")
    if not ids:
        res.note = "the event was refused"
        return res
    event_id = ids[0]
    statuses = _wait_final(ctx, ids, 60)
    if statuses.get(event_id) != "failed":
        res.note = f"the event is {statuses.get(event_id)}, not failed, after 60 s"
        return res
    stack.ledger.write(
        "UPDATE events SET dead_at = :at WHERE id = :id AND status = 'failed'",
        at=time.time(),
        id=event_id,
    )
    removed = httpx.delete(f"{stack.stack.producer_url}/hosts/{host}/vms/{vm}", timeout=30)
    if removed.status_code != 200:
        res.note = f"the VM could not be removed: {removed.status_code} {removed.text[:120]}"
        return res
    injected = time.time()
    res.injected = 1
    answer = httpx.post(f"{stack.stack.dispatcher_url}/dead-letters/{event_id}/redrive", timeout=30)
    queue = stack.topology.event_queue_name(Key(host=host, vm=vm, policy=policy))
    queued = stack.depths([queue])[queue]
    row = stack.event(event_id)
    status = row["status"] if row else None
    ctx.log(f"  re-drive answered {answer.status_code}; event {status}; {queue}: {queued}")
    if answer.status_code != 409 or status != "failed" or queued:
        res.anomalies.append(
            Anomaly(
                VIOLATION,
                event_id,
                injected,
                f"re-drive of an event whose VM was removed answered {answer.status_code} "
                f"({answer.text[:120]}); the event is {status}; {queued} message(s) in "
                f"the removed VM's queue {queue}",
            )
        )
    res.recoveries.append(ctx.recovery(injected, injected))
    return res
