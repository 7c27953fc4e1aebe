"""Stand-ins for the elasticity worker's Celery side, used by its unit tests and by the
``kubernetes-retire`` fault: a remote control that records what it is told, and a clock
that moves only when its caller moves it."""

from __future__ import annotations


class FakeControl:
    """Celery's remote control: records the calls; ``busy`` nodes hold tasks, ``alive``
    nodes answer a ping."""

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.alive: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def cancel_consumer(self, queue: str, node: str) -> None:
        self.calls.append(("cancel", node))

    def add_consumer(self, queue: str, node: str) -> None:
        self.calls.append(("add", node))

    def holds_tasks(self, node: str) -> bool:
        return node in self.busy

    def shutdown(self, node: str) -> None:
        self.calls.append(("shutdown", node))

    def ping(self, node: str) -> bool:
        self.calls.append(("ping", node))
        return node in self.alive


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
