"""The hand-back of held heads (``HEAD_REFRESH_INTERVAL``) against the real broker: it
returns what this process holds, and nothing the broker sent that it has not handled."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import kombu
from kombu.message import Message

from harness.processes import wait_until
from scheduler.dispatcher.handback import hand_back


def test_a_delivery_not_handled_yet_is_not_handed_back(amqp_url: str) -> None:
    """The broker has sent a second delivery on the channel, not handled yet (on the
    socket, or in the inbox of a loop that has not read it) when the held head is
    handed back. The head comes again, redelivered; the second one must not: handed
    back too, it would come again while its first copy is handled as a live head — the
    copy delivered again is then taken for a duplicate and acked (the event's only
    message gone), and acking the first one ends the session (unknown delivery tag)."""
    name = f"handback-{uuid.uuid4().hex[:10]}"
    with kombu.Connection(amqp_url) as conn, kombu.Connection(amqp_url) as publisher:
        channel = conn.channel()
        channel.basic_qos(0, 10, False)
        queue = kombu.Queue(name, auto_delete=True, channel=channel)
        queue.declare()
        got: list[Message] = []
        kombu.Consumer(channel, [queue], on_message=got.append).consume()
        send = publisher.Producer()

        def receive(last: str) -> Callable[[], bool]:
            def step() -> bool:
                if not got or got[-1].payload != last:
                    conn.drain_events(timeout=1)  # a timeout is an OSError: polled again
                return bool(got) and got[-1].payload == last

            return step

        send.publish("head", routing_key=name, serializer="json")
        wait_until(receive("head"), 10, what="the head delivered")
        send.publish("second", routing_key=name, serializer="json")
        wait_until(receive("second"), 10, what="the second delivered, not handled")
        hand_back(channel, [got[0].delivery_tag])
        send.publish("marker", routing_key=name, serializer="json")  # behind any return
        wait_until(receive("marker"), 10, what="the marker")

        seen = [(m.payload, bool(m.delivery_info["redelivered"])) for m in got]
        assert seen == [("head", False), ("second", False), ("head", True), ("marker", False)]
        for m in got[1:]:
            m.ack()  # every tag still valid: the session goes on
        assert channel.queue_declare(name, passive=True).message_count == 0
