"""Crash windows and mapping changes, with real processes on the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import amqp
import httpx
import kombu

from harness.processes import Stack, wait_until
from shared.kombu_topology import queue as kombu_queue
from shared.models import Key, Status
from shared.store import Store
from shared.topology import Topology
from tests.effects import EffectRecorder
from tests.integration.test_e2e import all_finished, event, post, stats


def test_dispatcher_started_after_events_were_posted(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory()
    stack.producer()
    ids = post(
        stack,
        [
            {"host": f"h{i % 4}", "vm": f"vm{i % 5}", "policy": "p", "action": "update"}
            for i in range(40)
        ],
    )
    mapping = httpx.get(f"{stack.producer_url}/mapping").json()
    assert (
        sum(
            p["pending"]
            for h in mapping["hosts"].values()
            for v in h["vms"].values()
            for p in v["policies"].values()
        )
        == 40
    )
    stack.dispatcher()
    stack.worker()
    wait_until(lambda: all_finished(stack, ids), 60, what="all events finished")
    assert {event(stack, i)["status"] for i in ids} == {"succeeded"}


def test_event_redelivered_after_a_crash_between_ledger_and_publish(
    stack_factory: Callable[..., Stack],
    recorder: EffectRecorder,
    amqp_url: str,
    prefix: str,
    db_url: str,
) -> None:
    """The dispatcher marked the event dispatched and died before publishing its task:
    the redelivered event must be published (once) and run (once)."""
    stack = stack_factory(DRIVER="webhook", WEBHOOK_URL=recorder.url)
    stack.producer()
    [eid] = post(
        stack, [{"host": "h1", "vm": "vm1", "policy": "p", "action": "heal", "id": "crash-window"}]
    )
    topology = Topology(prefix)
    store = Store.connect(db_url)
    with kombu.Connection(amqp_url) as conn:  # take the delivery, as the dead dispatcher did
        queue = kombu_queue(topology.event_queue(Key(host="h1", vm="vm1", policy="p")))
        got = queue(conn.channel()).get(no_ack=False)
        assert got is not None and got.payload["id"] == eid
        assert store.mark_dispatched_many([eid], "dead-dispatcher")[eid] is Status.QUEUED
    # the connection closed without an ack: the broker requeues it, flagged redelivered
    stack.dispatcher()
    stack.worker()
    wait_until(lambda: event(stack, eid)["status"] == "succeeded", 60, what="event succeeded")
    assert recorder.calls[eid] == 1
    assert stats(stack)["in_flight"] == 0


def test_duplicate_task_messages_have_one_effect(
    stack_factory: Callable[..., Stack],
    recorder: EffectRecorder,
    db_url: str,
    prefix: str,
) -> None:
    """Two task messages for one event (a republish after a crash): one effect."""
    from scheduler.celery_app import TASK_NAME, create_celery
    from scheduler.dispatcher.settings import DispatcherSettings

    stack = stack_factory(DRIVER="webhook", WEBHOOK_URL=recorder.url, START_PAUSED="true")
    stack.producer()
    [eid] = post(
        stack,
        [
            {
                "host": "h1",
                "vm": "vm1",
                "policy": "p",
                "action": "heal",
                "id": "dup",
                "payload": {"delay": 0.3},
            }
        ],
    )
    store = Store.connect(db_url)
    assert store.mark_dispatched_many([eid], "first")[eid] is Status.QUEUED
    body = {
        "id": eid,
        "host": "h1",
        "vm": "vm1",
        "policy": "p",
        "action": "heal",
        "payload": {"delay": 0.3},
        "accepted_at": time.time(),
    }
    topology = Topology(prefix)
    app = create_celery(DispatcherSettings(AMQP_URL=stack.env["AMQP_URL"], CAROUSEL_PREFIX=prefix))
    # two at once: one claims and runs, the other finds it held by another message
    for dispatch_id in ("d1", "d2"):
        app.send_task(TASK_NAME, args=[body, dispatch_id], task_id=eid)
    stack.worker()
    wait_until(lambda: event(stack, eid)["status"] == "succeeded", 60, what="succeeded")
    # one after: finds it finished, runs nothing (its task-succeeded event is a
    # completion again, which the dispatcher checks against the ledger)
    app.send_task(TASK_NAME, args=[body, "d3"], task_id=eid)
    wait_until(
        lambda: _depth(stack.env["AMQP_URL"], topology.actions_queue.name) == 0 and _idle(app),
        30,
        what="every task message processed",
    )
    assert recorder.calls[eid] == 1
    assert event(stack, eid)["attempts"] == 1


def test_worker_kill_9_mid_action_is_redelivered(
    stack_factory: Callable[..., Stack],
    recorder: EffectRecorder,
) -> None:
    stack = stack_factory(DRIVER="webhook", WEBHOOK_URL=recorder.url)
    stack.producer()
    stack.dispatcher()
    worker = stack.worker()
    [eid] = post(
        stack,
        [
            {
                "host": "h1",
                "vm": "vm1",
                "policy": "p",
                "action": "live_migrate",
                "id": "killed",
                "payload": {"delay": 2},
            }
        ],
    )
    wait_until(lambda: recorder.calls["killed"] == 1, 30, what="action started")
    worker.kill()
    stack.worker()
    wait_until(lambda: event(stack, eid)["status"] == "succeeded", 60, what="succeeded")
    got = event(stack, eid)
    assert got["attempts"] == 2  # interrupted once, then run to the end
    assert stats(stack)["in_flight"] == 0


def test_unavailable_host_and_vm_are_skipped_and_kept(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory()
    stack.producer()
    stack.dispatcher()
    stack.worker()
    post(
        stack,
        [
            {"host": "down", "vm": "vm1", "policy": "p", "action": "heal", "id": "d0"},
            {"host": "up", "vm": "off", "policy": "p", "action": "heal", "id": "o0"},
        ],
    )
    wait_until(lambda: all_finished(stack, ["d0", "o0"]), 30, what="first events")
    assert (
        httpx.put(
            f"{stack.producer_url}/hosts/down/availability", json={"available": False}
        ).status_code
        == 200
    )
    assert (
        httpx.put(
            f"{stack.producer_url}/hosts/up/vms/off/availability", json={"available": False}
        ).status_code
        == 200
    )
    post(
        stack,
        [
            {"host": "down", "vm": "vm1", "policy": "p", "action": "heal", "id": "d1"},
            {"host": "up", "vm": "off", "policy": "p", "action": "heal", "id": "o1"},
            {"host": "up", "vm": "on", "policy": "p", "action": "heal", "id": "n1"},
        ],
    )
    wait_until(lambda: event(stack, "n1")["status"] == "succeeded", 30, what="n1")
    wait_until(lambda: stats(stack)["held"] == 2, 30, what="skipped events held")
    assert event(stack, "d1")["status"] == "queued"
    assert event(stack, "o1")["status"] == "queued"
    mapping = httpx.get(f"{stack.producer_url}/mapping").json()
    assert mapping["hosts"]["down"]["available"] is False
    assert mapping["hosts"]["up"]["vms"]["off"]["available"] is False

    httpx.put(f"{stack.producer_url}/hosts/down/availability", json={"available": True})
    httpx.put(f"{stack.producer_url}/hosts/up/vms/off/availability", json={"available": True})
    wait_until(lambda: all_finished(stack, ["d1", "o1"]), 30, what="kept events run")
    assert (
        httpx.put(
            f"{stack.producer_url}/hosts/nope/availability", json={"available": True}
        ).status_code
        == 404
    )


def test_delete_vm_refuses_while_events_are_unfinished(
    stack_factory: Callable[..., Stack],
    amqp_url: str,
    prefix: str,
) -> None:
    stack = stack_factory(START_PAUSED="true")
    stack.producer()
    stack.dispatcher()
    stack.worker()
    post(stack, [{"host": "h1", "vm": "gone", "policy": "p", "action": "stop", "id": "g1"}])
    r = httpx.delete(f"{stack.producer_url}/hosts/h1/vms/gone")
    assert r.status_code == 409 and "1 unfinished" in r.text
    httpx.post(f"{stack.dispatcher_url}/resume")
    wait_until(lambda: all_finished(stack, ["g1"]), 30, what="g1 done")
    assert httpx.delete(f"{stack.producer_url}/hosts/h1/vms/gone").status_code == 200
    mapping = httpx.get(f"{stack.producer_url}/mapping").json()
    assert "gone" not in mapping["hosts"]["h1"]["vms"]
    assert httpx.delete(f"{stack.producer_url}/hosts/h1/vms/gone").status_code == 404
    queue = Topology(prefix).event_queue_name(Key(host="h1", vm="gone", policy="p"))

    def queue_gone() -> bool:
        with kombu.Connection(amqp_url) as conn:
            try:
                conn.channel().queue_declare(queue, passive=True)
            except conn.channel_errors:
                return True
            return False

    wait_until(queue_gone, 30, what="the dispatcher deleted the removed VM's queue")
    assert stats(stack)["connected"]  # the dispatcher's session survived the removal
    post(stack, [{"host": "h1", "vm": "gone", "policy": "p", "action": "stop", "id": "g2"}])
    wait_until(lambda: all_finished(stack, ["g2"]), 30, what="a re-added VM runs again")


def test_repost_of_an_id_is_idempotent(
    stack_factory: Callable[..., Stack],
    recorder: EffectRecorder,
) -> None:
    stack = stack_factory(DRIVER="webhook", WEBHOOK_URL=recorder.url)
    stack.producer()
    stack.dispatcher()
    stack.worker()
    ev = {"host": "h1", "vm": "vm1", "policy": "p", "action": "upgrade", "id": "once"}
    assert post(stack, [ev]) == ["once"]
    wait_until(lambda: all_finished(stack, ["once"]), 30, what="done")
    assert post(stack, [ev, ev]) == ["once", "once"]
    r = httpx.post(f"{stack.producer_url}/events", json={**ev, "action": "stop"})
    assert r.status_code == 409
    assert stats(stack)["in_flight"] == 0
    assert recorder.calls["once"] == 1


def _depth(amqp_url: str, name: str) -> int:
    """Messages ready in queue ``name``; 0 while nobody has declared it yet."""
    with kombu.Connection(amqp_url) as conn:
        try:
            _, ready, _ = conn.channel().queue_declare(name, passive=True)
        except amqp.exceptions.NotFound:
            return 0
        return int(ready)


def _idle(app: Any) -> bool:
    """Every worker answered and none has a task active or reserved."""
    inspect = app.control.inspect(timeout=2)
    active, reserved = inspect.active(), inspect.reserved()
    return bool(active) and not any(active.values()) and not any((reserved or {}).values())


def test_an_action_that_kills_its_worker_every_time_ends_failed(
    stack_factory: Callable[..., Stack],
) -> None:
    """Without a bound, reject_on_worker_lost hands such a task back for ever, and it
    holds its VM and a MAX_PARALLEL slot for ever."""
    stack = stack_factory(MAX_ATTEMPTS=2)
    stack.producer()
    stack.dispatcher()
    worker = stack.worker()
    heal = {"host": "h1", "vm": "vm1", "policy": "p", "action": "heal"}
    post(stack, [{**heal, "id": "crasher", "payload": {"simulate": {"crash": True}}}])
    wait_until(lambda: event(stack, "crasher")["status"] == "failed", 120, what="given up")
    got = event(stack, "crasher")
    assert got["attempts"] == 2, got
    assert "gave up after 2 attempts" in got["error"], got
    post(stack, [{**heal, "id": "next"}])  # the same VM: its slot was freed
    wait_until(lambda: event(stack, "next")["status"] == "succeeded", 60, what="next event")
    assert worker.proc is not None and worker.proc.poll() is None  # the worker lives on
