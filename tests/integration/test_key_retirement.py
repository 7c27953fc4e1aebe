"""Keys that live only while they have work, end to end: producer, dispatcher and Celery
workers as real processes on a real broker, each action recorded by a webhook receiver
(EffectRecorder). A key idle for KEY_IDLE_SECONDS loses its queue and its place in the
mapping; its next event brings both back — and events posted while their key is being
retired are neither lost, nor run twice, nor reordered."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
import kombu
import pytest

from harness.processes import Stack, wait_until
from shared.models import Key
from shared.topology import Topology
from tests.effects import EffectRecorder


def post(stack: Stack, events: list[dict[str, Any]]) -> None:
    r = httpx.post(f"{stack.producer_url}/events", json={"events": events}, timeout=30)
    assert r.status_code == 202, r.text


def stats(stack: Stack) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{stack.dispatcher_url}/stats", timeout=10).json()
    return body


def mapped_policies(stack: Stack, host: str, vm: str) -> list[str]:
    body = httpx.get(f"{stack.producer_url}/mapping", timeout=10).json()
    return list(body["hosts"].get(host, {}).get("vms", {}).get(vm, {}).get("policies", {}))


def queue_exists(amqp_url: str, name: str) -> bool:
    with kombu.Connection(amqp_url) as conn:
        channel = conn.channel()
        try:
            channel.queue_declare(name, passive=True)
            return True
        except conn.channel_errors:
            return False


def ev(event_id: str, vm: str = "vm1", policy: str = "p") -> dict[str, Any]:
    return {"host": "h1", "vm": vm, "policy": policy, "action": "heal", "id": event_id}


def test_an_idle_key_is_retired_and_its_next_event_brings_it_back(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder, amqp_url: str, prefix: str
) -> None:
    stack = stack_factory(DRIVER="webhook", WEBHOOK_URL=recorder.url, KEY_IDLE_SECONDS=1)
    stack.producer()
    stack.dispatcher()
    stack.worker()
    name = Topology(prefix).event_queue_name(Key(host="h1", vm="vm1", policy="p"))
    post(stack, [ev("first")])
    wait_until(lambda: recorder.calls["first"] == 1, 60, what="the first event ran")
    assert queue_exists(amqp_url, name)
    wait_until(lambda: stats(stack)["retired_total"] == 1, 30, what="the idle key retired")
    assert not queue_exists(amqp_url, name)
    assert mapped_policies(stack, "h1", "vm1") == []  # the VM stays, without the key
    assert stats(stack)["live_keys"] == 0

    post(stack, [ev("second")])
    wait_until(lambda: recorder.calls["second"] == 1, 60, what="the second event ran")
    assert mapped_policies(stack, "h1", "vm1") == ["p"]
    assert recorder.order == ["first", "second"]
    assert recorder.calls["first"] == 1


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_events_racing_their_keys_retirement_are_never_lost_doubled_or_reordered(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder, queue_type: str
) -> None:
    """Keys idle for a fifth of a second are retired all the time, while each of a
    dozen keys gets requests one after another with pauses around that length, so a
    request often arrives while its key is being retired. Every event runs once, and
    each key's events run in the order they were posted. On quorum queues (which
    RabbitMQ 3.x cannot delete if empty) the ledger's lock alone keeps them."""
    stack = stack_factory(
        DRIVER="webhook",
        WEBHOOK_URL=recorder.url,
        KEY_IDLE_SECONDS=0.2,
        QUEUE_TYPE=queue_type,
        MAX_PARALLEL=8,
    )
    stack.producer()
    stack.dispatcher()
    stack.worker()
    keys = [(f"vm{n % 6}", f"p{n // 6}") for n in range(12)]
    posted: dict[tuple[str, str], list[str]] = {key: [] for key in keys}
    errors: list[BaseException] = []

    def client(key: tuple[str, str], seed: int) -> None:
        rng = random.Random(seed)
        try:
            for n in range(12):
                ids = [f"{key[0]}-{key[1]}-{n}-{i}" for i in range(rng.choice((1, 1, 2)))]
                post(stack, [ev(i, vm=key[0], policy=key[1]) for i in ids])
                posted[key].extend(ids)
                wait_until(
                    lambda ids=ids: all(recorder.calls[i] for i in ids), 60, what=f"{ids} ran"
                )
                threading.Event().wait(rng.uniform(0.1, 0.4))  # pacing the client, no sync
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k, n)) for n, k in enumerate(keys)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[0]
    every = [i for ids in posted.values() for i in ids]
    assert all(recorder.calls[i] == 1 for i in every), {
        i: recorder.calls[i] for i in every if recorder.calls[i] != 1
    }
    for key, ids in posted.items():
        ran = [i for i in recorder.order if i in set(ids)]
        assert ran == ids, f"{key} ran out of order"
    assert stats(stack)["retired_total"] > len(keys)  # keys were retired again and again
