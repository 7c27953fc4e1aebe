"""Coalescing in the ledger (shared.coalescing): a coalescing event is answered with the
event that waits for the same host, VM, policy and action, decided by the database's
unique partial index, on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from shared import coalescing
from shared.db import events
from shared.models import Action, Key, Status, VmEventMessage
from shared.store import Accepted, Store
from tests.ledgers import accept, at_once, ensure_keys
from tests.unit.test_store import dispatched, ev, queued


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    return open_store()


def rows(store: Store) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        return [
            (r.id, r.status)
            for r in conn.execute(sa.select(events.c.id, events.c.status).order_by(events.c.id))
        ]


def test_a_coalescing_event_is_answered_with_the_queued_one(store: Store) -> None:
    queued(store, ev("a"))
    got = accept(store, [ev("b")], coalesce={"b"})
    assert (got.ids, got.coalesced, got.to_publish, got.inserted) == (["a"], [True], [], [])
    assert rows(store) == [("a", "queued")]


def test_without_coalesce_a_second_copy_is_stored(store: Store) -> None:
    queued(store, ev("a"))
    got = accept(store, [ev("b")])
    assert (got.ids, got.coalesced) == (["b"], [False])
    assert [r[0] for r in rows(store)] == ["a", "b"]


@pytest.mark.parametrize(
    "other",
    [
        ev("b", action=Action.MIGRATE),
        ev("b", policy="q"),
        ev("b", vm="v2"),
        ev("b", host="h2"),
    ],
)
def test_only_the_same_host_vm_policy_and_action_coalesce(store: Store, other: object) -> None:
    queued(store, ev("a"))
    got = accept(store, [other], coalesce={"b"})  # type: ignore[list-item]
    assert (got.ids, got.coalesced) == (["b"], [False])


def test_an_event_dispatched_or_cancelled_is_not_joined(store: Store) -> None:
    dispatched(store, ev("a"))
    queued(store, ev("c"))
    store.cancel("c")
    got = accept(store, [ev("b")], coalesce={"b"})
    assert (got.ids, got.coalesced) == (["b"], [False])
    store.confirm(got.to_publish)
    # and the next one joins b, the one waiting now
    got = accept(store, [ev("d")], coalesce={"d"})
    assert (got.ids, got.coalesced) == (["b"], [True])


def test_a_pending_event_joined_is_published_again_in_the_joiners_place(store: Store) -> None:
    """The waiting event's own request may still fail: the joiner publishes it too (as a
    re-post of a pending id is), and its confirm makes it queued."""
    a = ev("a")
    accept(store, [a], coalesce={"a"})
    got = accept(store, [ev("x", vm="v2"), ev("b"), ev("y", vm="v3")], coalesce={"b"})
    assert got.ids == ["x", "a", "y"]
    assert got.coalesced == [False, True, False]
    assert [e.id for e in got.to_publish] == ["x", "a", "y"]
    assert got.inserted == ["x", "y"]
    # a's own request failed meanwhile and discarded it: the joiner's confirm writes it
    store.discard(["a"])
    store.confirm(got.to_publish)
    assert store.status_of("a") is Status.QUEUED
    assert store.status_of("b") is None


def test_within_one_request_the_later_copies_join_the_first(store: Store) -> None:
    batch = [ev("a"), ev("b"), ev("c", action=Action.MIGRATE), ev("d")]
    got = accept(store, batch, coalesce={"b", "d"})
    assert got.ids == ["a", "a", "c", "a"]
    assert got.coalesced == [False, True, False, True]
    assert [e.id for e in got.to_publish] == ["a", "c"]


def test_a_coalescing_event_joining_the_ledgers_takes_its_joiners_along(store: Store) -> None:
    queued(store, ev("a"))
    got = accept(store, [ev("b"), ev("c")], coalesce={"b", "c"})
    assert (got.ids, got.coalesced) == (["a", "a"], [True, True])


def test_a_coalescing_one_is_preferred_to_a_plain_one(store: Store) -> None:
    queued(store, ev("a"))  # plain
    got = accept(store, [ev("b", at=2.0)], coalesce=set())
    store.confirm(got.to_publish)
    with store.engine.begin() as conn:  # b coalesces (as if posted so)
        conn.execute(events.update().where(events.c.id == "b").values(coalescing=True))
    got = accept(store, [ev("c")], coalesce={"c"})
    assert got.ids == ["b"]


def test_a_redriven_event_does_not_coalesce(store: Store) -> None:
    """Back to queued while another coalescing event waits for the same action: the
    index must not refuse the re-drive."""
    ensure_keys(store, [Key(host="h", vm="v", policy="p")])
    a = ev("a")
    accept(store, [a], coalesce={"a"})
    store.confirm([a])
    store.mark_dispatched_many(["a"], "d")
    store.claim("a", "d", "w", 30.0)
    store.finish("a", 1, False, "boom", dead=True)
    got = accept(store, [ev("b")], coalesce={"b"})
    store.confirm(got.to_publish)
    assert store.redrive("a") is not None
    assert store.status_of("a") is Status.QUEUED
    assert accept(store, [ev("c")], coalesce={"c"}).ids == ["b"]


def post(store: Store, e: VmEventMessage) -> Accepted:
    """As the producer admits one coalescing event."""
    return store.admit([e], time.time() - 60, {e.id}).accepted


def test_concurrent_coalescing_posts_store_one_event(open_store: Callable[[], Store]) -> None:
    """Two producer processes admit a coalescing event for the same action at once,
    many times: one row is stored, both are answered with its id, one of them as
    coalesced. The keys exist already, so nothing else serialises the two transactions
    (a new key's mapping version would): on PostgreSQL most rounds are decided by the
    unique index."""
    stores = [open_store(), open_store()]
    ensure_keys(stores[0], [Key(host="h", vm=f"vm{n}", policy="p") for n in range(40)])
    for n in range(40):
        posts = [ev(f"r{n}-{i}", vm=f"vm{n}") for i in range(2)]
        answers = at_once(
            *(functools.partial(post, s, e) for s, e in zip(stores, posts, strict=True))
        )
        stored = [r for r in rows(stores[0]) if r[0].startswith(f"r{n}-")]
        assert len(stored) == 1, f"round {n}: {stored}"
        winner = stored[0][0]
        assert answers[0].ids == answers[1].ids == [winner]
        assert sorted(answers[0].coalesced + answers[1].coalesced) == [False, True]


def test_the_insert_that_loses_the_index_is_answered_with_the_winner(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a concurrent request sees on PostgreSQL, made certain: its first lookup
    found nothing (the other transaction had not committed), then its insert meets the
    other's row in the unique index, does nothing, and the second lookup finds it."""
    accept(store, [ev("a")], coalesce={"a"})
    real = coalescing._waiting
    lookups: list[int] = []

    def not_yet(conn: sa.Connection, matches: list[coalescing.Match]) -> object:
        lookups.append(len(matches))
        return {} if len(lookups) == 1 else real(conn, matches)

    monkeypatch.setattr(coalescing, "_waiting", not_yet)
    got = accept(store, [ev("b")], coalesce={"b"})
    assert len(lookups) == 2
    assert (got.ids, got.coalesced, got.inserted) == (["a"], [True], [])
    assert [e.id for e in got.to_publish] == ["a"]  # pending: published again
    assert [r[0] for r in rows(store)] == ["a"]
