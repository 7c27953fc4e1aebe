"""Tests for scheduler.dispatcher.sweeper.Sweeper with a real SQLite ledger and a fake
task sender: what it sends again, and when it may judge a claim dead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from harness.processes import wait_until
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from scheduler.dispatcher.sweeper import Sweeper
from shared.models import Action, VmEventMessage
from shared.store import Store
from tests.ledgers import accept, pass_time


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[list[str], bool]] = []

    def send(
        self, producer: Any, batch: list[VmEventMessage], dispatch_id: str, again: bool
    ) -> None:
        self.sent.append(([e.id for e in batch], again))


@pytest.fixture
def store(ledger_url: str) -> Iterator[Store]:
    store = Store.connect(ledger_url)
    yield store
    store.engine.dispose()


def running_with_an_expired_claim(store: Store, event_id: str) -> None:
    event = VmEventMessage(
        id=event_id, host="h", vm=event_id, policy="p", action=Action.HEAL, accepted_at=0
    )
    accept(store, [event])
    store.confirm([event])
    store.mark_dispatched_many([event_id], "d")
    store.claim(event_id, "d", "w", lease_seconds=1.0)
    pass_time(store.engine, 100)  # expired long ago


def test_an_expired_claim_is_judged_only_after_a_lease_of_ledger_health(store: Store) -> None:
    """Its lease may have run out because the ledger was down and nobody could renew: a
    living holder gets one whole lease after the ledger is back to renew or finish."""
    running_with_an_expired_claim(store, "a")
    settings = DispatcherSettings(sweep_interval=0.001, claim_lease_seconds=0.3)
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    sender = FakeSender()
    sweeper = Sweeper(settings, store, state, cast(Any, sender))
    sweeper.ledger_failed()
    failed_at = time.monotonic()
    assert sweeper.maybe_sweep(cast(Any, None)) == 0  # too early to judge
    wait_until(lambda: sweeper.maybe_sweep(cast(Any, None)) == 1, 10, what="the takeover")
    assert time.monotonic() - failed_at >= 0.3
    assert sender.sent == [(["a"], True)]
    assert state.in_flight_ids() == ["a"]
    assert sweeper.resent_total == 1


def test_a_ledger_that_made_the_sweeper_wait_defers_the_judgement(store: Store) -> None:
    """A lock shorter than the busy timeout raises nothing, it only blocks: a write that
    waited a third of a lease means claims may have run out for want of a renewal."""
    running_with_an_expired_claim(store, "a")
    settings = DispatcherSettings(sweep_interval=0.001, claim_lease_seconds=0.3)
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    sender = FakeSender()
    sweeper = Sweeper(settings, store, state, cast(Any, sender))
    wait_until(lambda: sweeper._judges_claims(), 10, what="a lease of ledger health")
    mark_resent = store.mark_resent

    def slow_mark_resent(*args: Any, **kwargs: Any) -> list[str]:
        time.sleep(0.15)  # the ledger keeps this write waiting (a lock held elsewhere)
        return mark_resent(*args, **kwargs)

    store.mark_resent = slow_mark_resent  # type: ignore[method-assign]
    assert sweeper.maybe_sweep(cast(Any, None)) == 0
    assert sender.sent == []
    assert not sweeper._judges_claims()


def test_a_new_session_sends_again_the_tasks_of_every_unclaimed_dispatched_event(
    store: Store,
) -> None:
    """Task messages are transient: a broker restart (which ends the session) drops
    them. The next session sends them again at once, not RESEND_AFTER later; an event a
    worker holds is left to it."""
    for event_id in ("a", "b"):
        event = VmEventMessage(
            id=event_id, host="h", vm=event_id, policy="p", action=Action.HEAL, accepted_at=0
        )
        accept(store, [event])
        store.confirm([event])
        store.mark_dispatched_many([event_id], "d")
    store.claim("b", "d", "w", lease_seconds=60.0)
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    sender = FakeSender()
    sweeper = Sweeper(DispatcherSettings(), store, state, cast(Any, sender))
    assert sweeper.resend_unclaimed(cast(Any, None)) == 1
    assert sender.sent == [(["a"], True)]
    assert state.in_flight_ids() == ["a"]

    persistent = Sweeper(DispatcherSettings(task_persistent=True), store, state, cast(Any, sender))
    assert persistent.resend_unclaimed(cast(Any, None)) == 0  # they survive a restart
