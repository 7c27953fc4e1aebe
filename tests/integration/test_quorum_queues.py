"""QUEUE_TYPE=quorum: the whole pipeline on quorum queues (RabbitMQ replicates each over a
cluster's nodes; one node replicates to itself, which is enough to show every service
declares and uses them)."""

from __future__ import annotations

from collections.abc import Callable

import kombu
import pytest

from harness.processes import Stack, wait_until
from shared.models import Key
from shared.topology import Topology
from tests.integration.test_e2e import all_finished, post


def _declared_as(amqp_url: str, name: str, queue_type: str) -> bool:
    """Whether ``name`` exists as a queue of ``queue_type`` (a declare with another
    type is refused)."""
    with kombu.Connection(amqp_url) as conn:
        try:
            conn.channel().queue_declare(
                name, durable=True, auto_delete=False, arguments={"x-queue-type": queue_type}
            )
        except conn.channel_errors:
            return False
    return True


def test_the_pipeline_runs_on_quorum_queues(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(QUEUE_TYPE="quorum", MAX_PARALLEL=2)
    stack.producer()
    stack.dispatcher()
    worker = stack.worker()
    events = [
        {"host": f"h{i % 2}", "vm": f"v{i % 5}", "policy": "p", "action": "heal"} for i in range(30)
    ]
    ids = post(stack, events)
    wait_until(lambda: all_finished(stack, ids), 90, what="all events finished")
    url, topology = stack.env["AMQP_URL"], Topology(stack.env["CAROUSEL_PREFIX"], "quorum")
    for name in (
        topology.event_queue_name(Key(host="h0", vm="v0", policy="p")),
        topology.actions_queue.name,
        topology.completions_queue.name,
    ):
        assert _declared_as(url, name, "quorum"), name
        assert not _declared_as(url, name, "classic"), name
    # no native delayed delivery (Celery's for quorum queues: Carousel sends no ETA task)
    assert "WARNING" not in worker.log_path.read_text(), worker.log_tail()


@pytest.mark.parametrize("queue_type", ["lazy", ""])
def test_an_unknown_queue_type_is_refused(queue_type: str) -> None:
    from pydantic import ValidationError

    from shared.settings import CommonSettings

    with pytest.raises(ValidationError, match="queue_type"):
        CommonSettings(QUEUE_TYPE=queue_type)
