"""No event stays in flight for want of a task message, and a claim holder that stops
renewing is fenced off (real RabbitMQ, real processes)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import kombu

from harness.processes import Stack, wait_until
from shared.kombu_topology import queue as kombu_queue
from shared.models import Status, VmEventMessage
from shared.store import Store
from shared.topology import DEAD_REASON, Topology
from tests.effects import EffectRecorder
from tests.integration.test_e2e import event, post, stats
from tests.ledgers import accept

HEAL = {"host": "h1", "vm": "vm1", "policy": "p", "action": "heal"}


def test_a_task_message_lost_after_the_ack_is_sent_again(
    stack_factory: Callable[..., Stack], amqp_url: str, db_url: str
) -> None:
    """Purged (or revoked from Flower) after the dispatcher acked its event: without the
    sweeper the event would stay dispatched, holding its VM, for ever."""
    stack = stack_factory(RESEND_AFTER=2)
    stack.producer()
    stack.dispatcher()
    [eid] = post(stack, [{**HEAL, "id": "lost-task"}])
    store = Store.connect(db_url)
    wait_until(lambda: store.status_of(eid) is Status.DISPATCHED, 30, what="dispatched")
    actions = Topology(stack.env["CAROUSEL_PREFIX"]).actions_queue.name
    with kombu.Connection(amqp_url) as conn:
        channel = conn.default_channel
        wait_until(lambda: channel.queue_declare(actions, passive=True)[1] == 1, 30)
        assert channel.queue_purge(actions) == 1  # the task message is gone
    stack.worker()
    wait_until(lambda: event(stack, eid)["status"] == "succeeded", 60, what="succeeded")
    assert event(stack, eid)["attempts"] == 1
    assert stats(stack)["resent_total"] >= 1
    store.engine.dispose()


def test_a_stalled_claim_holder_is_taken_over_and_fenced_off(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    """A worker stops (SIGSTOP: alive, but not renewing its claim) mid-action. Another
    worker takes the event over with a larger fencing token once the claim expires; when
    the first resumes, its late outcome is refused. The webhook saw both tokens, so a
    cloud API can refuse the stale one."""
    stack = stack_factory(DRIVER="webhook", WEBHOOK_URL=recorder.url)
    stack.producer()
    stack.dispatcher()
    # one process: a stopped worker with free prefetch slots would also take (and sit
    # on) the task sent again, until the broker's heartbeat check drops it
    first = stack.worker(WORKER_CONCURRENCY="1")
    [eid] = post(stack, [{**HEAL, "id": "stalled", "payload": {"delay": 1}}])
    wait_until(lambda: recorder.calls[eid] == 1, 30, what="the action started")
    assert first.proc is not None
    os.killpg(first.proc.pid, signal.SIGSTOP)
    try:
        stack.worker()
        wait_until(lambda: event(stack, eid)["status"] == "succeeded", 60, what="taken over")
    finally:
        os.killpg(first.proc.pid, signal.SIGCONT)
    assert recorder.tokens[eid] == [1, 2]
    got = event(stack, eid)
    assert got["attempts"] == 2
    wait_until(
        lambda: "took the event over" in first.log_tail(200), 60, what="the late outcome refused"
    )
    assert event(stack, eid)["status"] == "succeeded"
    wait_until(lambda: stats(stack)["in_flight"] == 0, 30, what="the slot freed")


def _next_dead_letter(amqp_url: str, topology: Topology) -> Any:
    with kombu.Connection(amqp_url) as conn:
        channel = conn.default_channel
        kombu_queue(topology.dead_letter_queue)(channel).declare()
        return wait_until(lambda: channel.basic_get(topology.dead_letter_queue.name, no_ack=True))


def _publish_event(amqp_url: str, topology: Topology, event: VmEventMessage) -> None:
    target = kombu_queue(topology.event_queue(event.key))
    with kombu.Connection(amqp_url) as conn:
        conn.Producer().publish(
            event.model_dump_json(),
            exchange="",
            routing_key=target.name,
            content_type="application/json",
            content_encoding="utf-8",
            declare=[target],
        )


def test_an_event_message_the_ledger_does_not_know_waits_for_its_row(
    stack_factory: Callable[..., Stack], amqp_url: str, db_url: str
) -> None:
    """A producer request that timed out discarded its pending row while a retry of it
    published a second copy and is about to confirm the row again. The dispatcher must
    not ack that copy as a duplicate: it parks it until the row appears."""
    stack = stack_factory(UNKNOWN_EVENT_GRACE=3)
    stack.producer()
    stack.dispatcher()
    stack.worker()
    topology = Topology(stack.env["CAROUSEL_PREFIX"])
    post(stack, [{**HEAL, "id": "first"}])  # the key and its queue exist
    wait_until(lambda: event(stack, "first")["status"] == "succeeded", 60, what="first")

    late = VmEventMessage(id="late", accepted_at=time.time(), **HEAL)  # type: ignore[arg-type]
    _publish_event(amqp_url, topology, late)
    wait_until(lambda: stats(stack)["parked"] == 1, 30, what="parked")
    store = Store.connect(db_url)
    accept(store, [late])
    store.confirm([late])  # the retry's confirm writes the row
    wait_until(lambda: event(stack, "late")["status"] == "succeeded", 60, what="late ran")

    ghost = VmEventMessage(id="ghost", accepted_at=time.time(), **HEAL)  # type: ignore[arg-type]
    _publish_event(amqp_url, topology, ghost)
    got = _next_dead_letter(amqp_url, topology)
    assert "the ledger has no event ghost" in got.headers[DEAD_REASON]
    assert stats(stack)["parked"] == 0
    post(stack, [{**HEAL, "id": "after"}])  # the key goes on
    wait_until(lambda: event(stack, "after")["status"] == "succeeded", 60, what="after")
    store.engine.dispose()


def test_an_event_out_of_attempts_is_dead_lettered_and_can_be_redriven(
    stack_factory: Callable[..., Stack], amqp_url: str
) -> None:
    """An action that kills its worker: each death lets the claim expire, the sweeper
    sends the task again, and the claim counts an attempt, until MAX_ATTEMPTS. The event
    is then listed in the dead-letter record; a re-drive queues it again, afresh."""
    import httpx

    stack = stack_factory(MAX_ATTEMPTS=1)
    stack.producer()
    stack.dispatcher()
    stack.worker()
    crash = {**HEAL, "id": "crasher", "payload": {"simulate": {"crash": True}}}
    post(stack, [crash])
    wait_until(lambda: event(stack, "crasher")["status"] == "failed", 60, what="given up")
    dead_letters = httpx.get(f"{stack.dispatcher_url}/dead-letters").json()
    assert [(d["id"], d["attempts"]) for d in dead_letters] == [("crasher", 1)]
    assert "gave up after 1 attempts" in dead_letters[0]["error"]
    # a copy for whoever watches the queue
    got = _next_dead_letter(amqp_url, Topology(stack.env["CAROUSEL_PREFIX"]))
    assert got.headers[DEAD_REASON] == "gave up after 1 attempts"

    redrive = f"{stack.dispatcher_url}/dead-letters/crasher/redrive"
    assert httpx.post(redrive).json() == {"id": "crasher", "status": "queued"}
    assert httpx.post(redrive).status_code == 409  # not dead any more
    wait_until(lambda: event(stack, "crasher")["attempts"] == 1, 60, what="re-run")
    wait_until(lambda: event(stack, "crasher")["status"] == "failed", 60, what="given up again")
    post(stack, [{**HEAL, "id": "next"}])  # its VM is free
    wait_until(lambda: event(stack, "next")["status"] == "succeeded", 60, what="next")


def test_an_action_past_its_time_limit_ends_failed_and_dead_lettered(
    stack_factory: Callable[..., Stack],
) -> None:
    """Celery's soft time limit interrupts the action in its pool process; the event
    ends failed, is listed among the dead letters, and its VM is free again."""
    import httpx

    stack = stack_factory(ACTION_TIME_LIMIT=1)
    stack.producer()
    stack.dispatcher()
    stack.worker()
    post(stack, [{**HEAL, "id": "slow", "payload": {"simulate": {"duration": 30}}}])
    wait_until(lambda: event(stack, "slow")["status"] == "failed", 60, what="timed out")
    got = event(stack, "slow")
    limit = "ran past its time limit (ACTION_TIME_LIMIT): its outcome is unknown"
    assert got["error"] == limit, got
    assert got["attempts"] == 1
    listed = httpx.get(f"{stack.dispatcher_url}/dead-letters").json()
    assert [d["id"] for d in listed] == ["slow"]
    post(stack, [{**HEAL, "id": "next"}])
    wait_until(lambda: event(stack, "next")["status"] == "succeeded", 60, what="its VM free")
