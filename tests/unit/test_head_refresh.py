"""The loop's hand-back of held heads (``HEAD_REFRESH_INTERVAL``): which deliveries go
back, with fakes for the broker's side (the broker's part is
``tests/integration/test_hand_back.py``)."""

from __future__ import annotations

from typing import Any, cast

from scheduler.dispatcher.dispatcher import Dispatcher, Held, Known, Limits
from scheduler.dispatcher.loop import DispatcherLoop
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared.models import Action, VmEventMessage
from shared.store import Store


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send_method(self, method: Any, signature: str, args: tuple[Any, ...]) -> None:
        self.sent.append(args)


class FakeMessage:
    def __init__(self, channel: FakeChannel, delivery_tag: int) -> None:
        self.channel = channel
        self.delivery_tag = delivery_tag
        self.acked = False

    def ack(self) -> None:
        self.acked = True


def ev(event_id: str, vm: str) -> VmEventMessage:
    return VmEventMessage(
        id=event_id, host="h", vm=vm, policy="p", action=Action.HEAL, accepted_at=0
    )


def test_held_parked_and_unhandled_deliveries_go_back_through_the_highest_tag() -> None:
    """Held heads, a parked delivery and an event delivery still in the inbox go back
    with one nack through the highest of their tags — not through tag 0, which would
    also return a delivery still on its way (tag 12 here) — and a completion in the
    inbox, on the other channel, stays. With nothing held, nothing is sent."""
    events, other = FakeChannel(), FakeChannel()
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0), paused=True))
    loop = DispatcherLoop(DispatcherSettings(), cast(Store, None), state, cast(Any, None))
    for event_id, vm, tag in (("a", "v1", 3), ("b", "v2", 7)):
        assert state.offer(ev(event_id, vm), FakeMessage(events, tag))
    loop.handover._park(Held(ev("c", "v3"), cast(Any, FakeMessage(events, 9))))
    completion = ("completion", {}, cast(Any, FakeMessage(other, 50)))
    loop._inbox.extend([("event", {}, cast(Any, FakeMessage(events, 11))), completion])

    loop._maybe_refresh_heads(events)
    assert events.sent == [(11, True, True)]  # tag, multiple, requeue
    assert other.sent == []
    assert list(loop._inbox) == [completion]
    assert state.knows("a") is Known.NEW and state.knows("b") is Known.NEW
    assert loop.handover.parked == 0

    loop._next_refresh = 0.0  # due again: nothing is held now
    loop._maybe_refresh_heads(events)
    assert events.sent == [(11, True, True)]
