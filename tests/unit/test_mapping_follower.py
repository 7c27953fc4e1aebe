"""Tests for scheduler.dispatcher.mapping.MappingFollower: removing a VM (fakes for the
broker's consumer and channels; the ledger is not touched by a delta)."""

from __future__ import annotations

from typing import Any, cast

from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.mapping import MappingFollower
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared.models import Action, Key, MappingDelta, VmEventMessage
from shared.topology import Topology


class FakeChannel:
    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log

    def queue_delete(self, name: str, if_empty: bool = False) -> None:
        assert if_empty
        self.log.append(("delete", name))

    def close(self) -> None:
        pass


class FakeClient:
    channel_errors: tuple[type[BaseException], ...] = (RuntimeError,)
    connection_errors: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log

    def channel(self) -> FakeChannel:
        return FakeChannel(self.log)


class FakeConsumer:
    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log
        client = FakeClient(log)
        self.channel = type("Ch", (), {"connection": type("Conn", (), {"client": client})()})()

    def add_queue(self, bound: Any) -> None:
        self.log.append(("consume", bound.name))

    def consume(self) -> None:
        pass

    def cancel_by_queue(self, name: str) -> None:
        self.log.append(("cancel", name))


class FakeMessage:
    def __init__(self, log: list[tuple[str, str]], name: str) -> None:
        self.log, self.name = log, name

    def requeue(self) -> None:
        self.log.append(("requeue", self.name))


def test_a_removed_vms_queue_whose_head_was_given_back_is_not_deleted(monkeypatch: Any) -> None:
    """The head may be an event posted after the VM was re-added: the give-back and a
    delete on another channel are not ordered, so deleting could drop it."""
    import scheduler.dispatcher.mapping as mapping

    class Bound:  # a queue bound to a channel, without the broker
        def __init__(self, name: str) -> None:
            self.name = name

        def declare(self, nowait: bool = False) -> None:
            pass

    monkeypatch.setattr(mapping, "queue", lambda spec: lambda channel: Bound(spec.name))
    log: list[tuple[str, str]] = []
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    follower = MappingFollower(DispatcherSettings(), cast(Any, None), state)
    follower.attach(cast(Any, FakeConsumer(log)))
    for version, policy in enumerate(["held", "empty"], start=1):
        follower.apply(
            MappingDelta(version=version, op="key_added", host="h", vm="v", policy=policy)
        )
    event = VmEventMessage(
        id="e", host="h", vm="v", policy="held", action=Action.HEAL, accepted_at=0
    )
    assert state.offer(event, FakeMessage(log, "e"))
    log.clear()

    follower.apply(MappingDelta(version=3, op="vm_removed", host="h", vm="v"))

    topology = Topology()
    held_q = topology.event_queue_name(Key(host="h", vm="v", policy="held"))
    empty_q = topology.event_queue_name(Key(host="h", vm="v", policy="empty"))
    assert log == [
        ("cancel", held_q),
        ("cancel", empty_q),
        ("requeue", "e"),
        ("delete", empty_q),
    ]
    assert follower.queue_count == 0
