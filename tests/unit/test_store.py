"""Tests for shared.store.Store: the ledger state machine and the mapping (SQLite files)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.processes import wait_until
from shared import clock
from shared import partition_leases as pl
from shared.db import keys as keys_table
from shared.errors import LeaseLost, VmRemoved
from shared.fencing import PartitionFence
from shared.lease import Lease
from shared.models import Action, Key, Status, VmEventMessage
from shared.partition_leases import partition_of
from shared.store import Claim, Conflict, InFlight, Store
from tests.ledgers import accept, ensure_keys, pass_time, unfinished_count

#: seconds a claim lasts in these tests
LEASE = 30.0


def ev(
    event_id: str,
    host: str = "h",
    vm: str = "v",
    policy: str = "p",
    action: Action = Action.HEAL,
    payload: dict[str, Any] | None = None,
    at: float = 1.0,
) -> VmEventMessage:
    return VmEventMessage(
        id=event_id,
        host=host,
        vm=vm,
        policy=policy,
        action=action,
        payload=payload or {},
        accepted_at=at,
    )


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    return open_store()


def queued(store: Store, *events: VmEventMessage) -> None:
    accept(store, events)
    store.confirm(list(events))


def dispatched(store: Store, event: VmEventMessage, dispatch_id: str = "d0") -> None:
    queued(store, event)
    assert store.mark_dispatched_many([event.id], dispatch_id)[event.id] is Status.QUEUED


def running(store: Store, event: VmEventMessage, dispatch_id: str = "d1") -> None:
    dispatched(store, event)
    assert store.claim(event.id, dispatch_id, "w1", LEASE).outcome is Claim.CLAIMED


def finished(store: Store, event: VmEventMessage, ok: bool) -> None:
    running(store, event, dispatch_id="d1")
    assert store.finish(event.id, 1, ok, None if ok else "boom")


# -- accept ------------------------------------------------------------------------------


def test_accept_new_events_stores_them_pending_and_publishes_them(store: Store) -> None:
    a, b = ev("a", payload={"k": [1, 2]}), ev("b", vm="v2", action=Action.MIGRATE, at=5.5)
    accepted = accept(store, [a, b])
    assert accepted.to_publish == [a, b]
    assert accepted.ids == ["a", "b"]
    row = store.get("a")
    assert row is not None
    assert row["status"] == Status.PENDING
    assert row["attempts"] == 0
    assert json.loads(row["payload"]) == {"k": [1, 2]}
    assert row["dispatch_id"] is None
    assert row["worker"] is None
    row_b = store.get("b")
    assert row_b is not None
    assert (row_b["host"], row_b["vm"], row_b["policy"], row_b["action"]) == (
        "h",
        "v2",
        "p",
        "migrate",
    )
    assert row_b["accepted_at"] == 5.5


def test_repost_of_confirmed_event_is_not_published_again(store: Store) -> None:
    queued(store, ev("a"))
    accepted = accept(store, [ev("a", at=99.0)])
    assert accepted.to_publish == []
    assert accepted.ids == ["a"]
    row = store.get("a")
    assert row is not None
    assert row["status"] == Status.QUEUED
    assert row["accepted_at"] == 1.0  # the first acceptance stands


def test_repost_of_pending_event_is_published_again_but_stored_once(store: Store) -> None:
    accept(store, [ev("a")])
    accepted = accept(store, [ev("a"), ev("b")])
    assert [e.id for e in accepted.to_publish] == ["a", "b"]
    assert store.status_of("a") is Status.PENDING


@pytest.mark.parametrize(
    "status_setup",
    [
        pytest.param(lambda s: accept(s, [ev("a")]), id="pending"),
        pytest.param(lambda s: queued(s, ev("a")), id="queued"),
        pytest.param(lambda s: running(s, ev("a")), id="running"),
    ],
)
@pytest.mark.parametrize(
    "other",
    [
        pytest.param(ev("a", host="h2"), id="host"),
        pytest.param(ev("a", vm="v2"), id="vm"),
        pytest.param(ev("a", policy="p2"), id="policy"),
        pytest.param(ev("a", action=Action.STOP), id="action"),
    ],
)
def test_same_id_with_different_content_is_a_conflict_and_changes_nothing(
    store: Store, status_setup: Callable[[Store], Any], other: VmEventMessage
) -> None:
    status_setup(store)
    before = store.get("a")
    with pytest.raises(Conflict) as info:
        accept(store, [ev("fresh"), other])
    assert info.value.event_id == "a"
    assert store.get("fresh") is None  # the whole batch is refused
    assert store.get("a") == before


def test_same_id_with_different_payload_is_not_a_conflict(store: Store) -> None:
    """Documented: only host, VM, policy and action are compared; the first payload stays."""
    queued(store, ev("a", payload={"n": 1}))
    accepted = accept(store, [ev("a", payload={"n": 2})])
    assert accepted.to_publish == []
    row = store.get("a")
    assert row is not None
    assert json.loads(row["payload"]) == {"n": 1}


def test_duplicate_id_inside_one_batch_is_stored_and_published_once(store: Store) -> None:
    accepted = accept(store, [ev("a"), ev("b"), ev("a")])
    assert [e.id for e in accepted.to_publish] == ["a", "b"]
    assert accepted.ids == ["a", "b", "a"]
    assert store.status_of("a") is Status.PENDING


def test_duplicate_pending_id_inside_one_batch_is_republished_once(store: Store) -> None:
    accept(store, [ev("a")])
    accepted = accept(store, [ev("a"), ev("a")])
    assert [e.id for e in accepted.to_publish] == ["a"]


def test_same_id_with_different_content_inside_one_batch_is_a_conflict(store: Store) -> None:
    with pytest.raises(Conflict):
        accept(store, [ev("a", vm="v1"), ev("a", vm="v2")])
    assert store.get("a") is None


# -- confirm / discard -------------------------------------------------------------------


def test_confirm_moves_only_pending_to_queued(store: Store) -> None:
    accept(store, [ev("a"), ev("b")])
    dispatched(store, ev("c"))
    store.confirm([ev("a"), ev("c")])
    assert store.status_of("a") is Status.QUEUED
    assert store.status_of("b") is Status.PENDING
    assert store.status_of("c") is Status.DISPATCHED  # not moved back
    store.confirm([])  # no-op


def test_confirm_rewrites_a_row_a_concurrent_failure_discarded(store: Store) -> None:
    """Request A inserted X and failed; request B re-posted X and its publish was
    confirmed after A discarded the row: X is in the broker, so it is accepted."""
    a = accept(store, [ev("x")])
    b = accept(store, [ev("x")])
    assert a.inserted == ["x"] and b.inserted == [] and b.to_publish
    store.discard(a.inserted)
    assert store.get("x") is None
    store.confirm(b.to_publish)
    assert store.status_of("x") is Status.QUEUED


def test_discard_deletes_only_pending_rows(store: Store) -> None:
    accept(store, [ev("a")])
    queued(store, ev("b"))
    dispatched(store, ev("c"))
    store.discard(["a", "b", "c", "unknown"])
    assert store.get("a") is None
    assert store.status_of("b") is Status.QUEUED
    assert store.status_of("c") is Status.DISPATCHED
    store.discard([])  # no-op


def test_discarded_id_can_be_accepted_again(store: Store) -> None:
    accept(store, [ev("a", vm="v1")])
    store.discard(["a"])
    accepted = accept(store, [ev("a", vm="v2")])  # forgotten entirely: no conflict
    assert [e.vm for e in accepted.to_publish] == ["v2"]


# -- mark_dispatched ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "expected", "moved"),
    [
        pytest.param(lambda s: accept(s, [ev("a")]), Status.QUEUED, True, id="pending"),
        pytest.param(lambda s: queued(s, ev("a")), Status.QUEUED, True, id="queued"),
        pytest.param(lambda s: dispatched(s, ev("a")), Status.DISPATCHED, False, id="dispatched"),
        pytest.param(lambda s: running(s, ev("a")), Status.RUNNING, False, id="running"),
        pytest.param(
            lambda s: finished(s, ev("a"), ok=True),
            Status.SUCCEEDED,
            False,
            id="succeeded",
        ),
        pytest.param(
            lambda s: finished(s, ev("a"), ok=False),
            Status.FAILED,
            False,
            id="failed",
        ),
        pytest.param(lambda s: None, None, False, id="unknown"),
    ],
)
def test_mark_dispatched(
    store: Store, setup: Callable[[Store], Any], expected: Status | None, moved: bool
) -> None:
    setup(store)
    before = store.get("a")
    earliest = store.now()
    assert store.mark_dispatched_many(["a"], "dx")["a"] is expected
    after = store.get("a")
    if moved:
        assert after is not None
        assert after["status"] == Status.DISPATCHED
        assert after["dispatch_id"] == "dx"
        assert earliest <= after["dispatched_at"] <= store.now()  # the ledger's clock
    else:
        assert after == before  # a duplicate changes nothing


# -- claim / finish ----------------------------------------------------------------------


def test_claim_of_dispatched_event_with_any_dispatch_id(store: Store) -> None:
    dispatched(store, ev("a"), dispatch_id="dispatcher-id")
    earliest = store.now()
    got = store.claim("a", "task-id", "worker-1", LEASE)
    assert (got.outcome, got.token) == (Claim.CLAIMED, 1)
    row = store.get("a")
    assert row is not None
    assert row["status"] == Status.RUNNING
    assert row["dispatch_id"] == "task-id"
    assert row["worker"] == "worker-1"
    assert earliest <= row["started_at"] <= store.now()  # the ledger's clock
    assert row["attempts"] == 1
    assert row["lease_expires_at"] == pytest.approx(row["started_at"] + LEASE)


@pytest.mark.parametrize("dispatch_id", ["d1", "d2"])
def test_a_running_event_is_held_while_its_claim_lasts_whatever_the_message(
    store: Store, dispatch_id: str
) -> None:
    """Even a redelivery of the claiming message: its first holder may still be running
    the action (a connection loss it did not notice, a consumer timeout)."""
    running(store, ev("a"), dispatch_id="d1")
    pass_time(store.engine, LEASE - 1)
    before = store.get("a")
    assert store.claim("a", dispatch_id, "worker-2", LEASE).outcome is Claim.HELD
    assert store.get("a") == before


def test_an_expired_claim_is_taken_over_with_a_larger_token(store: Store) -> None:
    running(store, ev("a"), dispatch_id="d1")  # token 1
    pass_time(store.engine, LEASE + 1)
    got = store.claim("a", "d1", "worker-2", LEASE)
    assert (got.outcome, got.token) == (Claim.CLAIMED, 2)
    row = store.get("a")
    assert row is not None
    assert (row["attempts"], row["worker"]) == (2, "worker-2")
    # the first holder is fenced off: it can neither renew nor record an outcome
    assert not store.renew("a", 1, LEASE)
    assert not store.finish("a", 1, True, None)
    assert store.renew("a", 2, LEASE)
    assert store.finish("a", 2, False, "boom")
    assert store.status_of("a") is Status.FAILED


def test_renewal_keeps_the_claim(store: Store) -> None:
    running(store, ev("a"))  # token 1
    pass_time(store.engine, LEASE - 1)
    assert store.renew("a", 1, LEASE)  # a lease from now, by the ledger's clock
    pass_time(store.engine, 2)  # past the first lease, within the renewed one
    assert store.claim("a", "d2", "w2", LEASE).outcome is Claim.HELD
    assert store.finish("a", 1, True, None)
    assert not store.renew("a", 1, LEASE)  # over once finished


def test_a_claim_past_max_attempts_ends_the_event_failed_and_dead_lettered(
    store: Store,
) -> None:
    running(store, ev("a"), dispatch_id="d1")  # attempt 1 (its worker then died)
    pass_time(store.engine, LEASE + 1)
    assert store.claim("a", "d1", "w2", LEASE, max_attempts=2).outcome is Claim.CLAIMED
    pass_time(store.engine, LEASE + 1)
    earliest = store.now()
    assert store.claim("a", "d1", "w3", LEASE, max_attempts=2).outcome is Claim.EXHAUSTED
    row = store.get("a")
    assert row is not None
    assert (row["status"], row["attempts"]) == (Status.FAILED, 2)
    assert earliest <= row["finished_at"] <= store.now()
    assert "gave up after 2 attempts" in row["error"]
    assert row["dead_at"] == row["finished_at"]
    assert [d["id"] for d in store.dead_letters()] == ["a"]
    pass_time(store.engine, 1)
    again = store.claim("a", "d1", "w4", LEASE, max_attempts=2)
    assert again.outcome is Claim.FINISHED  # stays so
    assert store.in_flight() == []  # no slot is held by it


def test_max_attempts_leaves_events_it_may_not_claim_alone(store: Store) -> None:
    running(store, ev("a"), dispatch_id="d1")
    assert store.claim("a", "d1", "w2", LEASE, max_attempts=1).outcome is Claim.HELD
    assert store.claim("unknown", "d", "w", LEASE, max_attempts=1).outcome is Claim.UNKNOWN
    row = store.get("a")
    assert row is not None and row["status"] == Status.RUNNING


def test_finished_among_can_leave_out_the_just_finished(store: Store) -> None:
    """The dispatcher's reconcile frees only slots whose completion had time to arrive:
    an event finished a moment ago has its completion message on the way."""
    running(store, ev("a"), dispatch_id="d1")
    running(store, ev("b"), dispatch_id="d1")
    running(store, ev("c"), dispatch_id="d1")
    assert store.finish("a", 1, True, None)
    pass_time(store.engine, 5)
    assert store.finish("b", 1, False, "boom")
    assert sorted(store.finished_among(["a", "b", "c"])) == ["a", "b"]
    assert store.finished_among(["a", "b", "c"], finished_for=4) == ["a"]


@pytest.mark.parametrize("ok", [True, False])
@pytest.mark.parametrize("dispatch_id", ["d1", "d2"])
def test_claim_after_finish_is_finished(store: Store, ok: bool, dispatch_id: str) -> None:
    running(store, ev("a"), dispatch_id="d1")
    assert store.finish("a", 1, ok, None if ok else "boom")
    pass_time(store.engine, LEASE + 1)
    before = store.get("a")
    assert store.claim("a", dispatch_id, "worker-2", LEASE).outcome is Claim.FINISHED
    assert store.get("a") == before


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda s: None, id="unknown"),
        pytest.param(lambda s: accept(s, [ev("a")]), id="pending"),
        pytest.param(lambda s: queued(s, ev("a")), id="queued"),
    ],
)
def test_claim_of_unknown_or_undispatched_event_is_unknown(
    store: Store, setup: Callable[[Store], Any]
) -> None:
    setup(store)
    before = store.get("a")
    assert store.claim("a", "d1", "w", LEASE).outcome is Claim.UNKNOWN
    assert store.get("a") == before


@pytest.mark.parametrize(
    ("ok", "error", "status"),
    [(True, None, Status.SUCCEEDED), (False, "no capacity", Status.FAILED)],
)
def test_finish_with_the_claims_token(
    store: Store, ok: bool, error: str | None, status: Status
) -> None:
    running(store, ev("a"), dispatch_id="d1")
    earliest = store.now()
    assert store.finish("a", 1, ok, error)
    row = store.get("a")
    assert row is not None
    assert row["status"] == status
    assert row["error"] == error
    assert earliest <= row["finished_at"] <= store.now()
    assert row["dead_at"] is None
    assert not store.finish("a", 1, True, None)  # only once
    assert store.status_of("a") is status


def test_finish_with_another_token_changes_nothing(store: Store) -> None:
    running(store, ev("a"), dispatch_id="d1")
    assert not store.finish("a", 2, True, None)
    assert store.status_of("a") is Status.RUNNING


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda s: None, id="unknown"),
        pytest.param(lambda s: queued(s, ev("a")), id="queued"),
        pytest.param(lambda s: dispatched(s, ev("a"), dispatch_id="d1"), id="dispatched"),
    ],
)
def test_finish_of_unclaimed_event_changes_nothing(
    store: Store, setup: Callable[[Store], Any]
) -> None:
    setup(store)
    before = store.get("a")
    assert not store.finish("a", 1, True, None)
    assert store.get("a") == before


def test_claim_clears_the_error_of_an_earlier_attempt(store: Store) -> None:
    running(store, ev("a"), dispatch_id="d1")
    with store.engine.begin() as conn:  # an earlier attempt left an error behind
        conn.exec_driver_sql("UPDATE events SET error = 'old' WHERE id = 'a'")
    pass_time(store.engine, LEASE + 1)
    assert store.claim("a", "d1", "w", LEASE).outcome is Claim.CLAIMED
    row = store.get("a")
    assert row is not None
    assert row["error"] is None


def test_in_flight_lists_dispatched_and_running_only(store: Store) -> None:
    accept(store, [ev("pending")])
    queued(store, ev("queued"))
    dispatched(store, ev("dispatched", vm="v1"))
    running(store, ev("running", host="h2", vm="v2", policy="p2"))
    running(store, ev("done"))
    store.finish("done", 1, True, None)
    got = sorted(store.in_flight(), key=lambda r: r.id)
    assert got == [
        InFlight("dispatched", "h", "v1", "p", Status.DISPATCHED, "heal", None),
        InFlight("running", "h2", "v2", "p2", Status.RUNNING, "heal", None),
    ]


def test_in_flight_gives_each_event_its_action_and_group(store: Store) -> None:
    """What a restarted dispatcher counts against the action limits and group budgets."""
    grouped = ev("g", vm="web-1", action=Action.UPGRADE).model_copy(update={"group": "web"})
    dispatched(store, grouped)
    running(store, ev("m", vm="v2", action=Action.LIVE_MIGRATE))
    got = {r.id: (r.action, r.group) for r in store.in_flight()}
    assert got == {"g": ("upgrade", "web"), "m": ("live_migrate", None)}
    assert store.event("g") == grouped  # the group comes back with the event


def test_unfinished_count_counts_accepted_not_finished(store: Store) -> None:
    """pending rows are never-confirmed leftovers, not accepted events."""
    accept(store, [ev("pending")])
    queued(store, ev("queued"))
    dispatched(store, ev("dispatched"))
    running(store, ev("running"))
    running(store, ev("done"))
    store.finish("done", 1, False, "x")
    queued(store, ev("other-vm", vm="v2"))
    assert unfinished_count(store, "h", "v") == 3
    assert unfinished_count(store, "h", "v2") == 1
    assert unfinished_count(store, "h", "nope") == 0


# -- mapping -----------------------------------------------------------------------------


def K(host: str, vm: str, policy: str) -> Key:
    return Key(host=host, vm=vm, policy=policy)


def test_fresh_store_has_an_empty_mapping_at_version_zero(store: Store) -> None:
    snap = store.snapshot()
    assert snap.version == 0
    assert snap.hosts == {}
    assert store.mapping_version() == 0


def test_ensure_keys_keeps_first_appearance_order_at_every_level(store: Store) -> None:
    ensure_keys(store, [K("zeta", "vm9", "pol-b"), K("alpha", "vm2", "pol-z")])
    ensure_keys(
        store,
        [
            K("zeta", "vm1", "pol-a"),
            K("zeta", "vm9", "pol-a"),
            K("mid", "vmX", "p"),
            K("alpha", "vm2", "pol-a"),
        ],
    )
    snap = store.snapshot()
    assert list(snap.hosts) == ["zeta", "alpha", "mid"]
    assert list(snap.hosts["zeta"].vms) == ["vm9", "vm1"]
    assert list(snap.hosts["zeta"].vms["vm9"].policies) == ["pol-b", "pol-a"]
    assert list(snap.hosts["alpha"].vms["vm2"].policies) == ["pol-z", "pol-a"]
    assert snap.hosts["zeta"].available
    assert snap.hosts["zeta"].vms["vm9"].available


def test_ensure_keys_bumps_version_once_per_new_key(store: Store) -> None:
    keys = [K("h", "v", "p1"), K("h", "v", "p2"), K("h2", "v", "p1")]
    deltas = ensure_keys(store, [*keys, keys[0]])  # a repeat inside one call counts once
    assert [d.version for d in deltas] == [1, 2, 3]
    assert [(d.op, d.host, d.vm, d.policy) for d in deltas] == [
        ("key_added", k.host, k.vm, k.policy) for k in keys
    ]
    assert all("queue" not in d.model_dump() for d in deltas)  # names are the topology's
    assert store.mapping_version() == 3

    assert ensure_keys(store, keys) == []  # known keys: no delta, no bump
    assert store.mapping_version() == 3

    deltas = ensure_keys(store, [keys[1], K("h", "v", "p3")])
    assert [(d.version, d.policy) for d in deltas] == [(4, "p3")]
    assert store.mapping_version() == 4


def test_the_ledger_stores_keys_not_queue_names(store: Store) -> None:
    long_key = K("h" * 128, "v" * 128, "p" * 128)
    ensure_keys(store, [K("h", "v", "p"), long_key])
    assert store.all_keys() == [K("h", "v", "p"), long_key]  # first-appearance order
    assert "queue" not in {c.name for c in keys_table.columns}
    snap = store.snapshot()
    assert snap.hosts["h"].vms["v"].policies["p"].model_dump() == {"queued": 0}


def test_overdue_lists_unclaimed_and_expired_in_flight_events(store: Store) -> None:
    dispatched(store, ev("unclaimed", vm="v1"))
    running(store, ev("expired", vm="v2"))
    running(store, ev("live", vm="v3"))
    queued(store, ev("queued", vm="v4"))
    assert store.overdue(resend_after=LEASE) == []  # not yet
    pass_time(store.engine, LEASE + 1)
    assert store.renew("live", 1, LEASE)
    assert [e.id for e in store.overdue(resend_after=LEASE)] == ["unclaimed", "expired"]
    assert [e.id for e in store.overdue(resend_after=10 * LEASE)] == ["expired"]

    assert sorted(store.mark_resent(["unclaimed", "expired", "queued"], "again")) == [
        "expired",
        "unclaimed",
    ]
    assert store.overdue(resend_after=10.0) == []  # sent again just now
    pass_time(store.engine, 11)
    assert sorted(e.id for e in store.overdue(resend_after=10.0)) == ["expired", "unclaimed"]
    row = store.get("unclaimed")
    assert row is not None
    assert (row["status"], row["dispatch_id"]) == ("dispatched", "again")


def test_mark_resent_is_fenced_by_the_dispatcher_lease(store: Store) -> None:
    dispatched(store, ev("a"))
    mine, theirs = Lease("dispatcher", "me", 10.0), Lease("dispatcher", "them", 10.0)
    assert store.take_lease(theirs)
    with pytest.raises(LeaseLost):
        store.mark_resent(["a"], "again", mine)
    assert store.get("a")["dispatch_id"] == "d0"  # type: ignore[index]


def test_redrive_queues_a_dead_letter_afresh_and_undo_restores_it(store: Store) -> None:
    ensure_keys(store, [K("h", "v", "p")])  # as the producer's admit does
    running(store, ev("a", payload={"k": 1}))
    assert store.finish("a", 1, False, "ran past its time limit", dead=True)
    dead_at = store.get("a")["dead_at"]  # type: ignore[index]
    assert dead_at is not None and dead_at <= store.now()
    assert store.redrive("nope") is None
    event = store.redrive("a")
    assert event == ev("a", payload={"k": 1})
    row = store.get("a")
    assert row is not None
    assert (row["status"], row["attempts"], row["dead_at"], row["error"]) == (
        "queued",
        0,
        None,
        None,
    )
    assert row["fence"] == 1  # tokens keep growing across re-drives
    assert store.dead_letters() == []
    assert store.redrive("a") is None  # once
    store.undo_redrive("a", "re-drive failed")
    assert [(d["id"], d["error"]) for d in store.dead_letters()] == [("a", "re-drive failed")]


def test_a_dead_letter_whose_vm_was_removed_is_not_redriven(store: Store) -> None:
    """Its queue would be declared again and never consumed: refused, nothing changes;
    once an event brought the VM back, the re-drive goes through, adding its key again
    (as for a key retired while the event was dead)."""
    ensure_keys(store, [K("h", "v", "p")])
    running(store, ev("a"))
    assert store.finish("a", 1, False, "ran past its time limit", dead=True)
    before = store.get("a")
    assert store.remove_vm("h", "v") is not None
    with pytest.raises(VmRemoved, match="was removed"):
        store.redrive("a")
    assert store.get("a") == before
    ensure_keys(store, [K("h", "v", "q")])  # the VM is back, not the event's policy
    version = store.mapping_version()
    event, delta = store.redrive_keyed("a")
    assert event == ev("a")
    assert store.status_of("a") is Status.QUEUED
    assert delta is not None and delta.version == version + 1
    assert (delta.op, delta.host, delta.vm, delta.policy) == ("key_added", "h", "v", "p")
    assert K("h", "v", "p") in store.all_keys()


@pytest.mark.parametrize("event_id", ["\x00", "a\x00b", "\ud800"])
def test_an_id_the_ledger_cannot_hold_is_no_event(store: Store, event_id: str) -> None:
    """PostgreSQL refuses a NUL in text (and both a lone surrogate): such an id is
    unknown to every lookup, on both backends, instead of an error."""
    assert store.get(event_id) is None
    assert store.event(event_id) is None
    assert store.status_of(event_id) is None
    assert store.redrive(event_id) is None


def test_concurrent_confirms_of_a_discarded_id_write_it_once(
    open_store: Callable[[], Store],
) -> None:
    """Two requests for one id published it; the row was discarded meanwhile (a third
    request failed): both confirm at once, both find it missing, and the second insert
    must not fail (on PostgreSQL it did: the primary key). Repeated, each round from
    two processes' worth of connections released together."""
    stores = [open_store(), open_store()]
    errors: list[BaseException] = []
    for round_ in range(40):
        e = ev(f"r{round_}")
        start = threading.Barrier(2)

        def confirm(store: Store, e: VmEventMessage = e, start: threading.Barrier = start) -> None:
            start.wait(10)
            try:
                store.confirm([e])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=confirm, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, f"round {round_}: {errors[0]!r}"
        assert stores[0].status_of(e.id) is Status.QUEUED


def test_a_plain_failure_is_not_dead_lettered(store: Store) -> None:
    running(store, ev("a"))
    assert store.finish("a", 1, False, "no capacity")
    assert store.dead_letters() == []
    assert store.redrive("a") is None


@pytest.mark.parametrize("available", [False, True])
def test_availability_setters(store: Store, available: bool) -> None:
    ensure_keys(store, [K("h", "v", "p")])
    host_delta = store.set_host_available("h", available)
    assert host_delta is not None
    assert (host_delta.op, host_delta.host, host_delta.available, host_delta.version) == (
        "host_availability",
        "h",
        available,
        2,
    )
    vm_delta = store.set_vm_available("h", "v", available)
    assert vm_delta is not None
    assert (vm_delta.op, vm_delta.host, vm_delta.vm, vm_delta.available, vm_delta.version) == (
        "vm_availability",
        "h",
        "v",
        available,
        3,
    )
    snap = store.snapshot()
    assert snap.version == 3
    assert snap.hosts["h"].available is available
    assert snap.hosts["h"].vms["v"].available is available


def test_availability_setters_return_none_for_unknown_names(store: Store) -> None:
    ensure_keys(store, [K("h", "v", "p")])
    assert store.set_host_available("nope", False) is None
    assert store.set_vm_available("h", "nope", False) is None
    assert store.set_vm_available("nope", "v", False) is None
    assert store.mapping_version() == 1


def test_remove_vm(store: Store) -> None:
    ensure_keys(store, [K("h", "v1", "p"), K("h", "v1", "q"), K("h", "v2", "p")])
    delta = store.remove_vm("h", "v1")
    assert delta is not None
    assert (delta.op, delta.host, delta.vm, delta.version) == ("vm_removed", "h", "v1", 4)
    snap = store.snapshot()
    assert list(snap.hosts) == ["h"]
    assert list(snap.hosts["h"].vms) == ["v2"]
    assert [k for k in store.all_keys() if k.vm == "v1"] == []
    assert store.remove_vm("h", "v1") is None
    assert store.remove_vm("nope", "v") is None
    assert store.mapping_version() == 4

    # a re-created VM is a new appearance: it comes after the VMs already known
    deltas = ensure_keys(store, [K("h", "v1", "p")])
    assert [d.version for d in deltas] == [5]
    assert list(store.snapshot().hosts["h"].vms) == ["v2", "v1"]


def test_snapshot_counts_only_queued_events(store: Store) -> None:
    ensure_keys(store, [K("h", "v", "p"), K("h", "v", "q")])
    accept(store, [ev("pending")])
    queued(store, ev("q1"), ev("q2"), ev("q3"), ev("other", policy="q"))
    dispatched(store, ev("dispatched"))
    running(store, ev("running"))
    running(store, ev("done"))
    store.finish("done", 1, True, None)
    assert store.mark_dispatched_many(["q3"], "d")["q3"] is Status.QUEUED
    policies = store.snapshot().hosts["h"].vms["v"].policies
    assert policies["p"].queued == 2  # q1, q2
    assert policies["q"].queued == 1


# -- several processes on one file --------------------------------------------------------


def test_two_stores_on_one_file_see_each_others_writes(
    open_store: Callable[[], Store],
) -> None:
    producer, worker = open_store(), open_store()
    accept(producer, [ev("a")])
    assert worker.status_of("a") is Status.PENDING
    producer.confirm([ev("a")])
    assert worker.mark_dispatched_many(["a"], "d0")["a"] is Status.QUEUED
    assert producer.status_of("a") is Status.DISPATCHED
    assert worker.claim("a", "d1", "w", LEASE).outcome is Claim.CLAIMED
    assert producer.claim("a", "d2", "w2", LEASE).outcome is Claim.HELD
    assert worker.finish("a", 1, True, None)
    assert producer.claim("a", "d1", "w", LEASE).outcome is Claim.FINISHED

    ensure_keys(producer, [K("h", "v", "p")])
    assert worker.mapping_version() == 1
    assert ensure_keys(worker, [K("h", "v", "p")]) == []  # known through the other one
    worker.set_vm_available("h", "v", False)
    assert producer.snapshot().hosts["h"].vms["v"].available is False
    assert producer.mapping_version() == 2


def test_reopening_keeps_ledger_and_mapping_version(open_store: Callable[[], Store]) -> None:
    first = open_store()
    ensure_keys(first, [K("h", "v", "p"), K("h", "v", "q")])
    queued(first, ev("a"))
    second = open_store()  # create_schema again on an existing file
    assert second.mapping_version() == 2
    assert second.status_of("a") is Status.QUEUED


# -- the dispatcher lease ------------------------------------------------------------------


def test_one_holder_of_a_lease_at_a_time_until_it_expires(store: Store) -> None:
    a, b = Lease("dispatcher", "a", 10.0), Lease("dispatcher", "b", 10.0)
    assert store.take_lease(a)
    pass_time(store.engine, 5)
    assert not store.take_lease(b)  # a's runs 5 s more
    assert store.take_lease(a)  # renewed: 10 s from now
    pass_time(store.engine, 7)
    assert not store.take_lease(b)
    pass_time(store.engine, 3.5)
    assert store.take_lease(b)  # a stopped renewing: b takes over
    assert not store.take_lease(a)
    store.release_lease(b)  # a clean stop
    assert store.take_lease(a)


def test_the_lease_says_whether_its_live_holder_is_paused(store: Store) -> None:
    """What the elasticity worker reads: the holder's word, as of its last take; nothing
    once the lease expired (a dead dispatcher's pause is void); a renewal without a word
    keeps the last one."""
    a, b = Lease("dispatcher", "a", 10.0), Lease("dispatcher", "b", 10.0)
    assert store.lease_paused("dispatcher") is False  # no row yet
    assert store.take_lease(a, paused=True)
    assert store.lease_paused("dispatcher") is True
    assert store.take_lease(a)  # no word: still paused
    assert store.lease_paused("dispatcher") is True
    assert not store.take_lease(b, paused=False)  # not the holder: changes nothing
    assert store.lease_paused("dispatcher") is True
    assert store.take_lease(a, paused=False)
    assert store.lease_paused("dispatcher") is False
    assert store.take_lease(a, paused=True)
    pass_time(store.engine, 11)
    assert store.lease_paused("dispatcher") is False  # expired
    assert store.take_lease(b, paused=False)
    assert store.lease_paused("dispatcher") is False


def test_only_the_lease_holder_marks_events_dispatched(store: Store) -> None:
    accept(store, [ev("e1")])
    store.confirm([ev("e1")])
    a, b = Lease("dispatcher", "a", 10.0), Lease("dispatcher", "b", 10.0)
    assert store.take_lease(a)
    with pytest.raises(LeaseLost):
        store.mark_dispatched_many(["e1"], "d-b", fence=b)
    assert store.status_of("e1") is Status.QUEUED  # nothing changed
    assert store.mark_dispatched_many(["e1"], "d-a", fence=a) == {"e1": Status.QUEUED}
    assert store.status_of("e1") is Status.DISPATCHED


def _two_hosts_apart(partitions: int) -> tuple[str, str]:
    """Two host names in different partitions."""
    names = [f"h{i}" for i in range(50)]
    first = names[0]
    other = next(n for n in names if partition_of(n, partitions) != partition_of(first, partitions))
    return first, other


def test_a_shard_marks_dispatched_only_the_events_of_partitions_it_holds(store: Store) -> None:
    """The fence of a dispatcher shard (not wired in yet): a batch with a host of a
    partition it does not hold, or holds no more, changes nothing."""
    mine, theirs = _two_hosts_apart(4)
    accept(store, [ev("e1", host=mine), ev("e2", host=theirs)])
    store.confirm([ev("e1", host=mine), ev("e2", host=theirs)])
    p = partition_of(mine, 4)
    with store.engine.begin() as conn:
        pl.ensure(conn, range(4))
        token = pl.take(conn, "a", p, 10.0)
    assert token is not None
    fence = PartitionFence("a", 4, {p: token})
    with pytest.raises(LeaseLost):
        store.mark_dispatched_many(["e1", "e2"], "d", fence, {mine, theirs})
    assert store.status_of("e1") is Status.QUEUED  # nothing changed
    assert store.mark_dispatched_many(["e1"], "d", fence, {mine}) == {"e1": Status.QUEUED}
    # the partition taken over by another shard after an expiry: the old token is refused
    accept(store, [ev("e3", host=mine)])
    store.confirm([ev("e3", host=mine)])
    pass_time(store.engine, 11.0)
    with store.engine.begin() as conn:
        assert pl.take(conn, "b", p, 10.0) == token + 1
    with pytest.raises(LeaseLost):
        store.mark_resent(["e1"], "again", fence, {mine})
    with pytest.raises(LeaseLost):
        store.mark_dispatched_many(["e3"], "d2", fence, {mine})
    assert store.status_of("e3") is Status.QUEUED


@pytest.mark.parametrize(("durable", "level"), [(True, 2), (False, 1)])  # FULL, NORMAL
def test_durable_ledger_commits_reach_the_disk_before_they_return(
    tmp_path: Path, durable: bool, level: int
) -> None:
    """The producer's and the dispatcher's commits survive a power loss; the worker's
    per-event ones are not fsynced one by one (see shared.db.make_engine)."""
    store = Store.connect(f"sqlite:///{tmp_path / 'l.db'}", durable)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == level
    store.engine.dispose()


def test_a_server_ledgers_pool_is_sized_by_the_settings(ledger_url: str) -> None:
    """DB_POOL_SIZE and DB_POOL_OVERFLOW bound each process's connections to PostgreSQL
    (a SQLite file has no server to spare)."""
    from shared.settings import CommonSettings

    settings = CommonSettings(CAROUSEL_DB_URL=ledger_url, DB_POOL_SIZE="2", DB_POOL_OVERFLOW="1")
    store = Store.connect(settings.carousel_db_url, pool=settings.db_pool)
    try:
        if not ledger_url.startswith("postgresql"):
            return
        held = [store.engine.connect() for _ in range(3)]  # two pooled, one overflow
        assert store.engine.pool.size() == 2
        assert "Current Overflow: 1" in store.engine.pool.status()
        for conn in held:
            conn.close()
    finally:
        store.engine.dispose()


@pytest.mark.parametrize("env", [{"DB_POOL_SIZE": "0"}, {"DB_POOL_OVERFLOW": "-1"}])
def test_a_pool_size_out_of_range_is_refused(env: dict[str, str]) -> None:
    from pydantic import ValidationError

    from shared.settings import CommonSettings

    with pytest.raises(ValidationError, match="db_pool"):
        CommonSettings(**env)


def test_a_lookup_prepared_on_a_small_table_still_uses_the_index_once_it_grew(
    ledger_url: str,
) -> None:
    """psycopg prepares a statement on the server from its fifth execution; PostgreSQL's
    generic plan for it, made while the ledger was nearly empty, would scan the whole
    table for ever after (on a fresh ledger: every request's id lookup scanning every
    event). The ledger's sessions plan each execution (shared.db.PG_SESSION)."""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("SQLite has no plan cache across executions")
    from shared.db import Pool, events

    store = Store.connect(ledger_url, pool=Pool(size=1, overflow=0))  # one session
    try:
        for i in range(15):  # the id lookup prepared, and planned, on a tiny table
            accept(store, [ev(f"small-{i}")])
        with store.engine.begin() as conn:
            rows = [
                {**ev(f"grown-{i}").model_dump(), "action": "heal", "payload": "{}"}
                for i in range(5000)
            ]
            conn.execute(events.insert(), [{**r, "status": "queued"} for r in rows])
        scans = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'events'"
        with store.engine.begin() as conn:  # the counts of this session not yet reported
            before = conn.exec_driver_sql(scans).scalar()
            store.record_pending(conn, [ev("one-more")])
            after = conn.exec_driver_sql(scans).scalar()
        assert after == before, "the id lookup scanned the whole events table"
    finally:
        store.engine.dispose()


# -- the ledger's clock ----------------------------------------------------------------------


def test_the_ledger_clock_is_epoch_seconds_with_sub_second_steps(store: Store) -> None:
    """Leases are stamped and judged with the database's time (shared.clock): on this
    machine the database and the test share one clock, so the two agree closely, and it
    moves in steps finer than a second."""
    with store.engine.connect() as conn:
        first = clock.read(conn)
    assert abs(first - time.time()) < 5
    wait_until(lambda: store.now() != first, 5.0, 0.01, what="the ledger's clock to move")
    assert 0 < store.now() - first < 1
