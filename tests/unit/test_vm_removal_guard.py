"""The VM-removal guard and the batched new keys, in the ledger (shared across producer
processes), on SQLite and — when a server answers at 127.0.0.1:5432 — PostgreSQL (a
database of its own, dropped afterwards). Threads race removals against accepts the way
two producer processes would: each through its own connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import sqlalchemy as sa

from harness.processes import wait_until
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.mapping import MappingFollower
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared.db import vms
from shared.errors import VmRemoved
from shared.mapping_store import RemovalUnderway, UnfinishedEvents
from shared.models import Action, Key, MappingDelta, Status, VmEventMessage
from shared.store import Store, events
from tests.ledgers import ensure_keys
from tests.unit.mapping_doubles import stub_queues

TTL = 60.0


@pytest.fixture
def store(ledger_url: str) -> Iterator[Store]:
    """A Store on an empty ledger: SQLite, then PostgreSQL (the ledger_url fixture)."""
    s = Store.connect(ledger_url)
    yield s
    s.engine.dispose()


def ev(id: str, host: str = "h", vm: str = "v", policy: str = "p") -> VmEventMessage:
    return VmEventMessage(
        id=id, host=host, vm=vm, policy=policy, action=Action.HEAL, accepted_at=time.time()
    )


def admit(store: Store, *batch: VmEventMessage) -> Any:
    return store.admit(batch, time.time() - TTL)


def test_new_keys_of_a_request_are_one_version_and_one_delta(store: Store) -> None:
    got = admit(store, ev("a", vm="v1"), ev("b", vm="v2"), ev("c", vm="v1"), ev("d", vm="v2"))
    assert got.new_keys == [Key(host="h", vm="v1", policy="p"), Key(host="h", vm="v2", policy="p")]
    assert got.delta == MappingDelta(
        version=1, op="keys_added", host="h", keys=[("h", "v1", "p"), ("h", "v2", "p")]
    )
    assert store.mapping_version() == 1
    single = admit(store, ev("e", vm="v1"), ev("f", vm="v3", policy="q"))
    assert single.delta == MappingDelta(version=2, op="key_added", host="h", vm="v3", policy="q")
    again = admit(store, ev("g", vm="v3", policy="q"))
    assert again.new_keys == [] and again.delta is None
    assert store.mapping_version() == 2
    assert [k.vm for k in store.all_keys()] == ["v1", "v2", "v3"]
    assert list(store.snapshot().hosts["h"].vms) == ["v1", "v2", "v3"]


def test_a_marked_vm_refuses_events_and_a_void_mark_does_not(store: Store) -> None:
    admit(store, ev("a"))
    store.confirm([ev("a")])
    now = time.time()
    assert store.mark_removing("h", "v", now, now - TTL)
    with pytest.raises(RemovalUnderway):
        admit(store, ev("b"), ev("c", vm="other"))
    assert store.get("b") is None and store.get("c") is None  # nothing of the batch
    with pytest.raises(RemovalUnderway):  # a second removal
        store.mark_removing("h", "v", time.time(), time.time() - TTL)
    with pytest.raises(UnfinishedEvents) as refused:
        store.remove_marked_vm("h", "v", now, time.time() - 300)
    assert refused.value.count == 1
    store.unmark_removing("h", "v", now)
    assert admit(store, ev("b")).accepted.inserted == ["b"]
    # a mark older than its time limit is void: its remover died
    store.mark_removing("h", "v", now - 2 * TTL, now - 3 * TTL)
    assert admit(store, ev("c")).accepted.inserted == ["c"]
    assert store.mark_removing("nope", "v", now, now - TTL) is False


def test_young_pending_events_block_a_removal_and_stale_ones_are_deleted(store: Store) -> None:
    admit(store, ev("young"))  # a request still publishing it (pending)
    now = time.time()
    store.mark_removing("h", "v", now, now - TTL)
    with pytest.raises(UnfinishedEvents):
        store.remove_marked_vm("h", "v", now, now - 300)
    # the same row, seen as a leftover of a producer that died before the confirm
    delta = store.remove_marked_vm("h", "v", now, now + 1)
    assert delta.op == "vm_removed" and delta.vm == "v"
    assert store.get("young") is None
    assert store.snapshot().hosts["h"].vms == {}


def test_removal_races_accepts_and_no_event_lands_in_a_removed_vm(store: Store) -> None:
    """Accepts (each then confirmed, as the producer does after the broker's confirm)
    race removals of the same VM from other threads. Whatever interleaving: every
    accepted event is in the ledger, and its key is in the mapping."""
    admit(store, ev("seed"))
    store.confirm([ev("seed")])
    with store.engine.begin() as conn:  # the seed finished: the VM is removable
        conn.execute(events.update().values(status=Status.SUCCEEDED.value))
    accepted: list[str] = []
    outcomes: list[str] = []
    stop = threading.Event()

    def accepter(n: int) -> None:
        """Until 15 of its events are in: a removal may refuse any number of them."""
        mine = 0
        for i in range(5000):
            e = ev(f"e{n}-{i}")
            try:
                got = admit(store, e)
            except RemovalUnderway:
                continue
            store.confirm(got.accepted.to_publish)
            accepted.append(e.id)
            mine += 1
            if mine == 15:
                return

    def remover() -> None:
        while not stop.is_set():
            mark = time.time()
            try:
                if not store.mark_removing("h", "v", mark, mark - TTL):
                    outcomes.append("404")
                    continue
            except RemovalUnderway:
                outcomes.append("busy")
                continue
            try:
                store.remove_marked_vm("h", "v", mark, mark - 300)
                outcomes.append("removed")
                # an unfinished event of a VM that is not in the mapping would be lost;
                # one accepted after the removal has brought the VM back. One statement:
                # one snapshot, on SQLite and PostgreSQL alike
                with store.engine.connect() as conn:
                    orphans = conn.execute(
                        sa.select(sa.func.count())
                        .select_from(events)
                        .where(
                            events.c.vm == "v",
                            events.c.status != Status.SUCCEEDED.value,
                            ~sa.exists().where(vms.c.host == events.c.host, vms.c.vm == "v"),
                        )
                    ).scalar_one()
                outcomes.append(f"left {orphans}")
                with store.engine.begin() as conn:  # they finish: removable again
                    conn.execute(events.update().values(status=Status.SUCCEEDED.value))
            except UnfinishedEvents:
                store.unmark_removing("h", "v", mark)
                outcomes.append("409")
                with store.engine.begin() as conn:  # they finish: removable again
                    conn.execute(events.update().values(status=Status.SUCCEEDED.value))

    threads = [threading.Thread(target=accepter, args=(n,)) for n in range(3)]
    rm = threading.Thread(target=remover)
    rm.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # the accepts are over: the remover's next round finds the VM removable (under load
    # the accepters may have won every round until now)
    wait_until(lambda: "removed" in outcomes, 60, what="a removal once the accepts ended")
    stop.set()
    rm.join(120)
    assert accepted
    # no unfinished event was ever left without its VM
    assert all(o == "left 0" for o in outcomes if o.startswith("left")), outcomes
    for event_id in accepted:
        assert store.get(event_id) is not None, event_id
    # the last accepted event's key is in the mapping, or the VM was removed after it
    with store.engine.connect() as conn:
        open_events = conn.execute(
            sa.select(sa.func.count())
            .select_from(events)
            .where(events.c.status != Status.SUCCEEDED.value)
        ).scalar_one()
    if open_events:
        assert Key(host="h", vm="v", policy="p") in store.all_keys()


class _Consumer:
    def __init__(self) -> None:
        self.queues: list[str] = []
        self.channel = None

    def add_queue(self, bound: Any) -> None:
        self.queues.append(bound.name)

    def consume(self) -> None:
        pass


def test_deltas_published_out_of_order_lose_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two producer processes take versions 1 and 2 in the ledger and publish them in
    the other order: the dispatcher sees 2 after 0, resyncs from the ledger (which has
    every committed version), then ignores 1. Every key ends up consumed."""
    stub_queues(monkeypatch)
    first = admit(store, ev("a", vm="v1"), ev("b", vm="v2")).delta
    second = admit(store, ev("c", vm="v3"), ev("d", vm="v4")).delta
    assert (first.version, second.version) == (1, 2)
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    follower = MappingFollower(DispatcherSettings(), store, state)
    consumer = _Consumer()
    follower.attach(cast(Any, consumer))
    follower.apply(MappingDelta.model_validate_json(second.model_dump_json()))  # v2 first
    assert follower.version == 2
    follower.apply(MappingDelta.model_validate_json(first.model_dump_json()))  # late v1
    assert follower.version == 2
    assert follower.queue_count == 4
    third = admit(store, ev("e", vm="v5"), ev("f", vm="v6")).delta
    follower.apply(third)  # in order again: applied as a delta
    assert follower.version == 3 and follower.queue_count == 6
    # the single-key form of old producers is still read
    follower.apply(MappingDelta(version=4, op="key_added", host="h", vm="v7", policy="p"))
    assert follower.queue_count == 7


def test_a_redrive_racing_a_removal_never_queues_an_event_in_a_removed_vm(store: Store) -> None:
    """A dead-lettered event of a VM is re-driven while the VM is removed, from two
    threads released together, round after round. Whichever goes first: the event is
    either queued with its key in the mapping (the removal refused), or still
    dead-lettered with the VM gone (the re-drive refused) — never queued in a removed VM."""
    admit(store, ev("x"))
    store.confirm([ev("x")])
    seen: set[str] = set()

    def redrive(start: threading.Barrier, outcomes: dict[str, str]) -> None:
        start.wait(10)
        try:
            outcomes["redrive"] = "queued" if store.redrive("x") else "not dead"
        except VmRemoved:
            outcomes["redrive"] = "refused"

    def remove(start: threading.Barrier, outcomes: dict[str, str]) -> None:
        start.wait(10)
        mark = time.time()
        store.mark_removing("h", "v", mark, mark - TTL)
        try:
            store.remove_marked_vm("h", "v", mark, mark - 300)
            outcomes["remove"] = "removed"
        except UnfinishedEvents:
            store.unmark_removing("h", "v", mark)
            outcomes["remove"] = "refused"

    for round_ in range(60):
        with store.engine.begin() as conn:  # dead-lettered, its VM removable
            conn.execute(
                events.update().values(
                    status=Status.FAILED.value, dead_at=time.time(), error="out of attempts"
                )
            )
        start, outcomes = threading.Barrier(2), {}
        threads = [threading.Thread(target=f, args=(start, outcomes)) for f in (redrive, remove)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        status = store.status_of("x")
        in_mapping = Key(host="h", vm="v", policy="p") in store.all_keys()
        assert (status is Status.QUEUED) == in_mapping, (round_, outcomes, status)
        seen.add(f"{outcomes['redrive']}/{outcomes['remove']}")
        if not in_mapping:  # the VM comes back, as an event for it would bring it
            ensure_keys(store, [Key(host="h", vm="v", policy="p")])
    assert seen <= {"queued/refused", "refused/removed"}, seen
