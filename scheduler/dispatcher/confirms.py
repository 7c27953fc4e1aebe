"""Publishing a batch with publisher confirms, pipelined: send every message, then wait
once for all the broker's acks (py-amqp's own confirm mode waits after each message)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import kombu

from scheduler.dispatcher.errors import Unconfirmed


class ConfirmingProducer:
    def __init__(self, connection: kombu.Connection, timeout: float = 30.0) -> None:
        self.connection = connection
        self.timeout = timeout
        self.channel = connection.channel()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.producer = kombu.Producer(self.channel)
        self._sent = 0  # delivery tags count up from 1 per message on the channel
        self._outstanding: set[int] = set()
        self._nacked = False
        # Count every message actually published on the channel: one send may publish
        # more than one (Celery's send_task also publishes a task-sent event for Flower).
        publish = self.channel.basic_publish

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._sent += 1
            self._outstanding.add(self._sent)
            return publish(*args, **kwargs)

        self.channel.basic_publish = counted

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._outstanding = {t for t in self._outstanding if t > tag}
        else:
            self._outstanding.discard(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked = True
        self._on_ack(tag, multiple)

    def publish_all(self, sends: list[Callable[[kombu.Producer], Any]]) -> None:
        """Run each ``send(producer)``, then wait until the broker confirmed every
        message published. Raises :class:`Unconfirmed`; a returned (unroutable)
        message raises from the channel as py-amqp does."""
        for send in sends:
            send(self.producer)
        deadline = time.monotonic() + self.timeout
        while self._outstanding:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unconfirmed(f"{len(self._outstanding)} messages not confirmed in time")
            try:
                self.connection.drain_events(timeout=min(left, 1.0))
            except TimeoutError:
                continue
        if self._nacked:
            self._nacked = False
            raise Unconfirmed("the broker nacked a message")
