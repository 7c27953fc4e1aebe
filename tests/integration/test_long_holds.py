"""Heads held past the broker's consumer_timeout do not end the dispatcher's session: a
private RabbitMQ node with a consumer_timeout of 3 s (checked every second), a paused
dispatcher holding heads for longer than that."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from harness import private_broker
from harness.private_broker import PrivateBroker
from harness.processes import Stack, wait_until
from tests.conftest import IN_CI
from tests.effects import EffectRecorder
from tests.integration.test_e2e import all_finished, post

#: the private node's consumer_timeout, in ms
CONSUMER_TIMEOUT_MS = 3000


@pytest.fixture
def node(tmp_path: Path) -> Iterator[PrivateBroker]:
    if not private_broker.available():
        if IN_CI:
            pytest.fail("rabbitmq-server is missing: no private node for the consumer timeout")
        pytest.skip("rabbitmq-server is missing")
    broker = PrivateBroker(
        tmp_path / "rabbit", config=(f"consumer_timeout = {CONSUMER_TIMEOUT_MS}",)
    )
    broker.start()
    # channels judge their deliveries' age at each tick: every second, not every minute
    assert broker.ctl("eval", "application:set_env(rabbit, channel_tick_interval, 1000).")
    yield broker
    broker.stop()


def test_heads_held_past_the_consumer_timeout_keep_the_session(
    stack_factory: Callable[..., Stack], node: PrivateBroker, recorder: EffectRecorder
) -> None:
    """Paused, the dispatcher holds each key's head for longer than the broker lets a
    delivery go unacked. Handed back every second (HEAD_REFRESH_INTERVAL), none gets
    that old: the session is never closed, and once resumed every event runs once, in
    its key's order. Without the hand-backs the broker closes the channel
    (PRECONDITION_FAILED) a few seconds in, and again after every reconnect."""
    stack = stack_factory(
        AMQP_URL=node.url,
        DRIVER="webhook",
        WEBHOOK_URL=recorder.url,
        START_PAUSED="true",
        HEAD_REFRESH_INTERVAL=1,
    )
    stack.producer()
    dispatcher = stack.dispatcher()
    stack.worker()
    events = [
        {"id": f"{vm}-{i}", "host": "h1", "vm": vm, "policy": "p", "action": "heal"}
        for vm in ("vm1", "vm2")
        for i in range(2)
    ]
    ids = post(stack, events)

    def log() -> str:
        return dispatcher.log_path.read_text(errors="replace")

    wait_until(
        lambda: log().count("held heads back") >= 8 or "session ended" in log(),
        60,
        what="eight hand-backs (past the consumer timeout), or the session's end",
    )
    assert "session ended" not in log(), dispatcher.log_tail()
    assert "PRECONDITION_FAILED" not in log()
    assert httpx.post(f"{stack.dispatcher_url}/resume").status_code == 200
    wait_until(lambda: all_finished(stack, ids), 60, what="every event finished")
    assert sorted(recorder.order) == sorted(ids)  # each once
    for vm in ("vm1", "vm2"):
        assert [i for i in recorder.order if i.startswith(vm)] == [f"{vm}-0", f"{vm}-1"]
