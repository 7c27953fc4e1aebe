"""The producer's publish path against the real broker: confirms, returns, broker down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import kombu
import pytest

from harness import private_broker
from harness.private_broker import PrivateBroker
from harness.processes import free_port
from producer.errors import BrokerUnavailable
from producer.publisher import Publisher
from shared.models import Action, VmEventMessage
from shared.topology import Topology
from tests.conftest import IN_CI


def _event(i: int, vm: str = "vm1") -> VmEventMessage:
    return VmEventMessage(
        id=f"e{i}", host="h1", vm=vm, policy="p", action=Action.HEAL, accepted_at=time.time()
    )


def _depth(amqp_url: str, queue: str) -> int:
    with kombu.Connection(amqp_url) as conn:
        _, count, _ = conn.channel().queue_declare(queue, passive=True)
        return int(count)


def test_confirmed_batch_is_in_its_queues(amqp_url: str, prefix: str) -> None:
    topology = Topology(prefix)

    async def run() -> None:
        pub = Publisher(amqp_url, topology, timeout=10)
        await pub.start()
        await pub.publish_events([_event(i, vm=f"vm{i % 3}") for i in range(300)])
        await pub.close()

    asyncio.run(run())
    for vm in ("vm0", "vm1", "vm2"):
        assert _depth(amqp_url, topology.event_queue_name(_event(0, vm).key)) == 100
        with kombu.Connection(amqp_url) as conn:
            conn.channel().queue_delete(topology.event_queue_name(_event(0, vm).key))


def test_returned_message_is_redeclared_and_republished(amqp_url: str, prefix: str) -> None:
    """A queue deleted behind the producer's declare cache: the mandatory publish comes
    back, the queue is declared again and the event stored, not silently dropped."""
    topology = Topology(prefix)
    queue = topology.event_queue_name(_event(0).key)

    async def run() -> None:
        pub = Publisher(amqp_url, topology, timeout=10)
        await pub.start()
        await pub.publish_events([_event(1)])
        with kombu.Connection(amqp_url) as conn:
            conn.channel().queue_delete(queue)
        await pub.publish_events([_event(2), _event(3)])
        await pub.close()

    asyncio.run(run())
    assert _depth(amqp_url, queue) == 2
    with kombu.Connection(amqp_url) as conn:
        conn.channel().queue_delete(queue)


def test_broker_down_is_an_error_not_an_acceptance() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}//"

    async def run() -> None:
        pub = Publisher(dead, Topology("dead"), timeout=2)
        with pytest.raises(BrokerUnavailable):
            await pub.publish_events([_event(1)])

    asyncio.run(run())


def test_pipelined_confirms_count_every_publish(amqp_url: str, prefix: str) -> None:
    """Each send may publish more than one message (Celery's send_task also publishes a
    task-sent event): every one must be confirmed, whatever order the acks come in."""
    from scheduler.dispatcher.confirms import ConfirmingProducer

    queue = f"{prefix}.confirms"
    with kombu.Connection(amqp_url) as conn:
        producer = ConfirmingProducer(conn, timeout=10)
        producer.channel.queue_declare(queue, durable=True)

        def two(i: int):  # type: ignore[no-untyped-def]
            def send(p: kombu.Producer) -> None:
                p.publish({"i": i}, routing_key=queue, delivery_mode=2)
                p.publish({"i": i, "echo": True}, routing_key=queue, delivery_mode=2)

            return send

        for round_ in range(5):
            producer.publish_all([two(round_ * 100 + i) for i in range(100)])
        assert not producer._outstanding
        _, depth, _ = conn.channel().queue_declare(queue, passive=True)
        assert depth == 1000
        conn.channel().queue_delete(queue)


def test_a_payload_integer_beyond_64_bits_is_published_intact(amqp_url: str, prefix: str) -> None:
    """JSON allows any integer; the fast serialiser stops at 64 bits. Such a payload is
    still published (not a 503) and read back unchanged."""
    topology = Topology(prefix)
    huge = -882031590470488424448
    event = VmEventMessage(
        id="big",
        host="h1",
        vm="vm1",
        policy="p",
        action=Action.HEAL,
        payload={"n": huge, "nested": [{"m": 2**70}]},
        accepted_at=time.time(),
    )
    queue = topology.event_queue_name(event.key)

    async def run() -> None:
        pub = Publisher(amqp_url, topology, timeout=10)
        await pub.start()
        await pub.publish_events([event])
        await pub.close()

    asyncio.run(run())
    with kombu.Connection(amqp_url) as conn:
        channel = conn.channel()
        message = channel.basic_get(queue, no_ack=True)
        assert message is not None
        assert VmEventMessage.model_validate_json(message.body) == event
        channel.queue_delete(queue)


def _channels(node: PrivateBroker) -> set[str]:
    out = node.ctl("list_channels", "pid", "--no-table-headers", "--silent")
    assert out is not None, "rabbitmqctl list_channels failed"
    return {line.strip() for line in out.splitlines() if line.strip()}


def test_a_refused_publish_is_an_error_and_the_next_goes_on_a_new_channel(
    tmp_path: Path, prefix: str
) -> None:
    """The broker nacks a publish (here a full queue set to reject-publish; after a
    cluster node's loss, a channel that published to a quorum queue mid-election nacked
    everything after): the request fails, nothing is taken as published, and the
    publisher drops that channel, so the next request does not inherit its state."""
    if not private_broker.available():
        if IN_CI:
            pytest.fail("rabbitmq-server is missing: no private node for the nack test")
        pytest.skip("rabbitmq-server is missing")
    node = PrivateBroker(tmp_path / "rabbit")
    node.start()
    try:
        topology = Topology(prefix)
        queue = topology.event_queue_name(_event(0).key)
        policy = '{"max-length": 1, "overflow": "reject-publish"}'
        assert node.ctl("set_policy", "full", f"^{prefix}\\.ev\\.", policy, "--apply-to", "queues")

        async def run() -> None:
            pub = Publisher(node.url, topology, timeout=10)
            await pub.start()
            await pub.publish_events([_event(1)])  # the queue is full now
            before = _channels(node)
            with pytest.raises(BrokerUnavailable, match="did not confirm"):
                await pub.publish_events([_event(2)])
            assert _depth(node.url, queue) == 1  # the refused one is not in it
            with kombu.Connection(node.url) as conn:  # room again
                assert conn.channel().basic_get(queue, no_ack=True) is not None
            await pub.publish_events([_event(2)])
            after = _channels(node)
            await pub.close()
            assert _depth(node.url, queue) == 1
            assert before - after, "the channel the broker nacked on is still open"
            assert after - before, "no new channel for the next publish"

        asyncio.run(run())
    finally:
        node.stop()
