"""Talking to running Celery workers (remote control): the graceful-retire steps."""

from __future__ import annotations

from celery import Celery

#: what a retired worker logs as the reason of its shutdown
RETIRE_REASON = "retired by the elasticity worker (idle; its consumer was cancelled first)"


class CeleryControl:
    def __init__(self, app: Celery, timeout: float = 2.0) -> None:
        self.app = app
        self.timeout = timeout

    def cancel_consumer(self, queue: str, node: str) -> None:
        """Stop ``node`` taking tasks from ``queue`` (it keeps running what it has)."""
        self.app.control.cancel_consumer(
            queue, destination=[node], reply=True, timeout=self.timeout
        )

    def add_consumer(self, queue: str, node: str) -> None:
        self.app.control.add_consumer(queue, destination=[node], reply=True, timeout=self.timeout)

    def holds_tasks(self, node: str) -> bool:
        """Whether ``node`` has a task running or reserved. A node that does not answer
        counts as holding tasks: retiring it would not be safe."""
        inspect = self.app.control.inspect(destination=[node], timeout=self.timeout)
        active = inspect.active()
        reserved = inspect.reserved()
        if not active or node not in active or reserved is None or node not in reserved:
            return True
        return bool(active[node]) or bool(reserved[node])

    def ping(self, node: str) -> bool:
        """Whether ``node`` answers a ping within the timeout: its process lives and
        reads the broker, whatever its heartbeats said."""
        replies = self.app.control.ping(destination=[node], timeout=self.timeout) or []
        return any(node in reply for reply in replies)

    def shutdown(self, node: str) -> None:
        """Warm shutdown by destination, saying why: the worker logs this reason (at
        INFO; Celery's own "Got shutdown from remote" is a WARNING)."""
        self.app.control.broadcast("shutdown", arguments={"msg": RETIRE_REASON}, destination=[node])
