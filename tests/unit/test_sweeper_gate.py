"""Tests for scheduler.dispatcher.sweeper.Sweeper with a real ledger (SQLite and
PostgreSQL) and a fake task sender: what it sends again, when it may judge a claim dead,
and that a dispatcher shard sends again only the tasks of its own partitions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import sqlalchemy as sa

from harness.processes import wait_until
from scheduler.dispatcher import sweeper as sweeper_module
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from scheduler.dispatcher.sweeper import Sweeper
from shared import partition_leases as pl
from shared.fencing import PartitionFence
from shared.models import Action, VmEventMessage
from shared.store import Store, events
from tests.ledgers import accept, pass_time

#: partitions of the shard tests
P = 4


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


# -- a dispatcher shard ------------------------------------------------------------------
def _two_hosts_apart() -> tuple[str, str]:
    """Two host names in different partitions."""
    names = [f"h{i}" for i in range(50)]
    other = next(n for n in names if pl.partition_of(n, P) != pl.partition_of(names[0], P))
    return names[0], other


def dispatched(store: Store, event_id: str, host: str) -> None:
    """An event in flight, its task sent (and then lost: no worker claims it)."""
    event = VmEventMessage(
        id=event_id, host=host, vm=event_id, policy="p", action=Action.HEAL, accepted_at=0
    )
    accept(store, [event])
    store.confirm([event])
    store.mark_dispatched_many([event_id], "d")


def dispatch_id_of(store: Store, event_id: str) -> str | None:
    """The dispatch its task was last sent in (a resend gives it a new one)."""
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(events.c.dispatch_id).where(events.c.id == event_id)
        ).scalar_one()


def shard_fence(store: Store, host: str) -> PartitionFence:
    """Shard "a"'s fence, holding only ``host``'s partition: a mark of another host's
    event with it raises."""
    partition = pl.partition_of(host, P)
    with store.engine.begin() as conn:
        pl.ensure(conn, range(P))
        token = pl.take(conn, "a", partition, 60.0)
    assert token is not None
    return PartitionFence("a", P, {partition: token})


def test_a_shard_resends_only_the_tasks_of_its_partitions(store: Store) -> None:
    """Another shard's events in flight are its own to send again, count and fence: the
    sweep and the session's start leave them alone (marking one with this shard's fence
    would raise, so one attempt would fail the whole sweep)."""
    mine, theirs = _two_hosts_apart()
    dispatched(store, "theirs", theirs)
    dispatched(store, "mine", mine)
    before = dispatch_id_of(store, "theirs")
    fence = shard_fence(store, mine)
    owns = lambda host: pl.partition_of(host, P) == pl.partition_of(mine, P)  # noqa: E731

    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    sender = FakeSender()
    sweeper = Sweeper(DispatcherSettings(), store, state, cast(Any, sender), owns=owns)
    assert sweeper.resend_unclaimed(cast(Any, None), fence) == 1
    assert sender.sent == [(["mine"], True)]
    assert state.in_flight_ids() == ["mine"]  # only ours counted against our limits
    assert dispatch_id_of(store, "theirs") == before
    assert dispatch_id_of(store, "mine") != "d"

    pass_time(store.engine, 1000)  # both overdue for the sweep too
    assert shard_fence(store, mine) == fence  # renewed, as the shard does: the same tenure
    state = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    sender = FakeSender()
    sweeper = Sweeper(DispatcherSettings(), store, state, cast(Any, sender), owns=owns)
    assert sweeper.maybe_sweep(cast(Any, None), fence) == 1
    assert sender.sent == [(["mine"], True)]
    assert state.in_flight_ids() == ["mine"]
    assert dispatch_id_of(store, "theirs") == before


def test_a_shards_sweep_finds_its_events_behind_a_batch_of_others(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page read holds every event in flight (MAX_PARALLEL), not one batch: ours
    come after a batch of others' sent earlier, and still go, a batch at a time."""
    monkeypatch.setattr(sweeper_module, "SWEEP_BATCH", 2)
    mine, theirs = _two_hosts_apart()
    for n in range(3):  # sent first: the oldest overdue
        dispatched(store, f"theirs{n}", theirs)
        pass_time(store.engine, 1)
    for n in range(3):
        dispatched(store, f"mine{n}", mine)
        pass_time(store.engine, 1)
    pass_time(store.engine, 1000)
    fence = shard_fence(store, mine)
    owns = lambda host: pl.partition_of(host, P) == pl.partition_of(mine, P)  # noqa: E731
    settings = DispatcherSettings(sweep_interval=0.001, max_parallel=10)
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    sender = FakeSender()
    sweeper = Sweeper(settings, store, state, cast(Any, sender), owns=owns)
    assert sweeper.maybe_sweep(cast(Any, None), fence) == 2  # a batch, oldest first
    assert sender.sent == [(["mine0", "mine1"], True)]
    wait_until(lambda: sweeper.maybe_sweep(cast(Any, None), fence) == 1, 10, what="a sweep")
    assert sender.sent[1] == (["mine2"], True)
    assert sorted(state.in_flight_ids()) == ["mine0", "mine1", "mine2"]
    assert all(dispatch_id_of(store, f"theirs{n}") == "d" for n in range(3))
