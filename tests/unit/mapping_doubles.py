"""What the mapping follower's tests share: its queues declared on no broker."""

from __future__ import annotations

from typing import Any


class BoundQueue:
    """A queue as the follower binds it, its declare a no-op."""

    def __init__(self, name: str) -> None:
        self.name = name

    def declare(self, nowait: bool = False) -> None:
        pass


def stub_queues(monkeypatch: Any) -> None:
    """The follower's event queues, bound to no channel (the test gives it none)."""
    import scheduler.dispatcher.mapping as mapping

    monkeypatch.setattr(mapping, "queue", lambda spec: lambda channel: BoundQueue(spec.name))
