"""Cancelling in the ledger: pending|queued -> cancelled, decided by one conditional
UPDATE against the dispatcher's mark and the producer's confirm (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.models import Key, Status
from shared.store import Cancel, Claim, Store
from tests.ledgers import accept, at_once, ensure_keys
from tests.unit.test_store import LEASE, dispatched, ev, queued, running


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    return open_store()


def test_a_queued_event_is_cancelled_and_never_dispatched(store: Store) -> None:
    ensure_keys(store, [Key(host="h", vm="v", policy="p")])
    queued(store, ev("a"))
    assert store.snapshot().hosts["h"].vms["v"].policies["p"].queued == 1
    got = store.cancel("a")
    assert (got.status, got.now) == (Status.CANCELLED, True)
    row = store.get("a")
    assert row is not None and row["status"] == Status.CANCELLED
    assert row["finished_at"] is not None  # when it was cancelled
    # the dispatcher's mark refuses it: it reports the status, and changes nothing
    assert store.mark_dispatched_many(["a"], "d1") == {"a": Status.CANCELLED}
    assert store.status_of("a") is Status.CANCELLED
    # no backlog: not for the elasticity worker, not in the mapping, not for a removal
    assert store.queued_by_action() == {}
    assert store.snapshot().hosts["h"].vms["v"].policies["p"].queued == 0
    assert store.unfinished_of([("h", "v", "p")]) == {}


def test_a_second_cancel_finds_it_cancelled(store: Store) -> None:
    queued(store, ev("a"))
    store.cancel("a")
    got = store.cancel("a")
    assert (got.status, got.now) == (Status.CANCELLED, False)


def test_a_pending_event_cancelled_stays_cancelled_when_the_broker_confirms(store: Store) -> None:
    """The producer stored it and is publishing it; a cancel comes first; the broker's
    confirm then must not make it queued again (nor write a second row)."""
    a = ev("a")
    accept(store, [a])
    assert store.cancel("a").now
    store.confirm([a])
    assert store.status_of("a") is Status.CANCELLED
    # a publish that failed meanwhile does not take the cancelled row away either
    store.discard(["a"])
    assert store.status_of("a") is Status.CANCELLED
    # nor does a re-post of the id bring it back: the id stays cancelled, not published
    again = accept(store, [a])
    assert (again.ids, again.to_publish) == (["a"], [])
    assert store.status_of("a") is Status.CANCELLED


@pytest.mark.parametrize("how", ["dispatched", "running", "succeeded", "failed"])
def test_an_event_dispatched_already_is_not_cancelled(store: Store, how: str) -> None:
    e = ev("a")
    if how == "dispatched":
        dispatched(store, e)
    else:
        running(store, e)
    if how in ("succeeded", "failed"):
        assert store.finish("a", 1, how == "succeeded", None)
    before = store.get("a")
    got = store.cancel("a")
    assert (got.status, got.now) == (Status(how), False)
    assert store.get("a") == before  # nothing changed


def test_an_unknown_event_is_not_cancelled(store: Store) -> None:
    assert store.cancel("nope").status is None
    assert store.cancel("a\x00b").status is None  # an id the ledger cannot hold


def test_a_worker_never_claims_a_cancelled_event(store: Store) -> None:
    """Whatever task message reaches a worker: the claim takes only dispatched (or
    running, expired) events."""
    queued(store, ev("a"))
    store.cancel("a")
    assert store.claim("a", "d9", "w1", LEASE).outcome is Claim.UNKNOWN
    assert store.claim("a", "d9", "w1", LEASE, max_attempts=1).outcome is Claim.UNKNOWN
    row = store.get("a")
    assert row is not None and row["status"] == Status.CANCELLED and row["attempts"] == 0


def test_cancel_racing_the_dispatchers_mark_one_wins(open_store: Callable[[], Store]) -> None:
    """A cancel and the dispatcher's mark of the same event, from two processes' worth
    of connections released together, many times: exactly one moves it."""
    canceller, dispatcher = open_store(), open_store()
    for n in range(60):
        e = ev(f"r{n}")
        queued(canceller, e)
        cancel, mark = at_once(
            lambda: canceller.cancel(e.id),  # noqa: B023 - joined before the next round
            lambda: dispatcher.mark_dispatched_many([e.id], f"d{n}")[e.id],  # noqa: B023
        )
        assert isinstance(cancel, Cancel)
        marked = mark is Status.QUEUED
        assert cancel.now != marked, f"round {n}: {cancel}, {mark}"
        final = canceller.status_of(e.id)
        assert final is (Status.CANCELLED if cancel.now else Status.DISPATCHED)
