"""Retiring idle keys: which keys the pure dispatcher finds idle and forgets, and the
ledger's fence — on SQLite and PostgreSQL, with threads racing a request's accept
against a retirement the way a producer and the dispatcher would — and a dispatcher
shard's, which retires nothing of a partition it lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.idle import IdleKeys
from scheduler.dispatcher.mapping import MappingFollower
from scheduler.dispatcher.retirement import Retirement
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared import partition_leases as pl
from shared.errors import LeaseLost
from shared.fencing import PartitionFence
from shared.models import Action, Key, Status, VmEventMessage
from shared.store import Claim, Store

TTL = 60.0


def ev(id: str, host: str = "h", vm: str = "v", policy: str = "p") -> VmEventMessage:
    return VmEventMessage(
        id=id, host=host, vm=vm, policy=policy, action=Action.HEAL, accepted_at=time.time()
    )


def K(host: str = "h", vm: str = "v", policy: str = "p") -> Key:
    return Key(host=host, vm=vm, policy=policy)


# -- the pure part -----------------------------------------------------------------
def test_idle_keys_come_longest_unused_first_and_a_busy_one_starts_again() -> None:
    idle = IdleKeys()
    for n, key in enumerate([("h", "a", "p"), ("h", "b", "p"), ("h", "c", "p")]):
        idle.used(key, float(n))
    idle.used(("h", "a", "p"), 5.0)  # used again: to the back
    assert idle.due(3.5, 2.0, 10, lambda k: False) == [("h", "b", "p")]
    assert idle.due(10.0, 2.0, 1, lambda k: False) == [("h", "b", "p")]  # the limit
    busy = {("h", "b", "p")}
    assert idle.due(10.0, 2.0, 10, lambda k: k in busy) == [("h", "c", "p"), ("h", "a", "p")]
    assert idle.due(11.0, 2.0, 10, lambda k: False) == [("h", "c", "p"), ("h", "a", "p")]
    assert idle.due(12.0, 2.0, 10, lambda k: False)[-1] == ("h", "b", "p")  # used at 10


def test_a_key_with_a_head_or_its_vm_busy_is_not_idle_and_a_retired_one_is_forgotten() -> None:
    d: Dispatcher[str] = Dispatcher(Limits(max_parallel=10, per_vm=1, per_host=0))
    for vm in ("v1", "v2", "v3"):
        d.add_key("h", vm, "p", now=0.0)
    d.add_key("h2", "w", "p", now=0.0)
    d.offer(ev("held", vm="v1"), "m1")  # v1 holds a head
    d.offer(ev("run", vm="v2"), "m2")
    assert d.pick(0.0) is not None  # v1's head goes first
    held = d.pick(0.0)
    assert held is not None and held.event.id == "run"
    # v1's key was used by its dispatch at 0; v2's too; neither VM is free anyway
    assert sorted(d.idle_keys(100.0, 10.0, 10)) == [("h", "v3", "p"), ("h2", "w", "p")]
    assert d.retire_keys([("h", "v3", "p"), ("h2", "w", "p")]) == []
    assert d.stats()["hosts"].keys() == {"h"}  # h2 had no other key: forgotten
    d.complete("held")
    d.complete("run")
    assert sorted(d.idle_keys(100.0, 10.0, 10)) == []  # used at 100 when found busy
    assert sorted(d.idle_keys(200.0, 10.0, 10)) == [("h", "v1", "p"), ("h", "v2", "p")]
    d.retire_keys([("h", "v1", "p"), ("h", "v2", "p")])
    assert d.stats()["hosts"] == {}
    # back: a new appearance, dispatched as any other
    d.add_key("h", "v2", "p", now=300.0)
    d.offer(ev("again", vm="v2"), "m3")
    again = d.pick(300.0)
    assert again is not None and again.event.id == "again"


def test_keeping_a_key_starts_its_idle_time_again() -> None:
    d: Dispatcher[str] = Dispatcher(Limits(max_parallel=10, per_vm=1, per_host=0))
    d.add_key("h", "v", "p", now=0.0)
    assert d.idle_keys(20.0, 10.0, 10) == [("h", "v", "p")]
    d.keep_keys([("h", "v", "p")], 20.0)
    assert d.idle_keys(25.0, 10.0, 10) == []
    assert d.idle_keys(31.0, 10.0, 10) == [("h", "v", "p")]


# -- the ledger ----------------------------------------------------------------------
@pytest.fixture
def store(ledger_url: str) -> Iterator[Store]:
    s = Store.connect(ledger_url)
    yield s
    s.engine.dispose()


def admit(store: Store, *batch: VmEventMessage) -> list[Key]:
    return store.admit(batch, time.time() - TTL).new_keys


def finish(store: Store, event: VmEventMessage) -> None:
    """Through dispatched and running to succeeded, as the dispatcher and a worker do."""
    store.confirm([event])
    assert store.mark_dispatched_many([event.id], "d1")[event.id] is Status.QUEUED
    assert store.claim(event.id, "d1", "w1", 30.0).outcome is Claim.CLAIMED
    assert store.finish(event.id, 1, True, None)


def test_a_key_no_event_waits_for_is_retired_under_one_version(store: Store) -> None:
    first = ev("a", vm="v1")
    admit(store, first, ev("b", vm="v2"), ev("c", vm="v3"))
    finish(store, first)  # v1: done; v2 queued; v3 pending (its request still publishing)
    store.confirm([ev("b", vm="v2")])
    version = store.mapping_version()
    asked: list[Key] = []

    def delete(keys: list[Key]) -> list[Key]:
        asked.extend(keys)
        return keys

    done = store.retire_keys([K(vm="v1"), K(vm="v2"), K(vm="v3"), K(vm="gone")], delete)
    assert asked == [K(vm="v1")]
    assert done.retired == [K(vm="v1")]
    assert done.kept == [K(vm="v2"), K(vm="v3")]
    assert done.absent == [K(vm="gone")]
    assert done.delta is not None and done.delta.op == "keys_retired"
    assert done.delta.version == version + 1 == store.mapping_version()
    assert done.delta.keys == [("h", "v1", "p")]
    assert K(vm="v1") not in store.all_keys()
    assert "v1" in store.snapshot().hosts["h"].vms  # the VM stays, without the key
    # the next event of the key adds it again
    assert admit(store, ev("d", vm="v1")) == [K(vm="v1")]
    assert K(vm="v1") in store.all_keys()


def test_a_queue_the_broker_kept_keeps_its_key_and_nothing_retired_takes_no_version(
    store: Store,
) -> None:
    admit(store, ev("a", vm="v1"), ev("b", vm="v2"))
    for e in (ev("a", vm="v1"), ev("b", vm="v2")):
        store.cancel(e.id)
    version = store.mapping_version()
    done = store.retire_keys([K(vm="v1"), K(vm="v2")], lambda keys: keys[1:])
    assert done.retired == [K(vm="v2")] and done.kept == [K(vm="v1")]
    assert store.mapping_version() == version + 1
    done = store.retire_keys([K(vm="v1")], lambda keys: [])
    assert done.retired == [] and done.delta is None
    assert store.mapping_version() == version + 1
    assert K(vm="v1") in store.all_keys()


def test_a_request_racing_a_retirement_either_keeps_the_key_or_adds_it_again(
    store: Store,
) -> None:
    """Round after round, a request for a key and a retirement of it start together,
    each on its own connection. The retirement deletes the queue while it holds the
    ledger's lock (here: a pause, as a broker's round trips would take). Whichever goes
    first, a request never publishes into a queue the retirement deleted: either the
    key stayed (its event was seen waiting, or the request held the key), or the request
    found the key gone and declares it again (it is among its new keys)."""
    admit(store, ev("seed"))
    store.cancel("seed")
    for n in range(40):
        start = threading.Barrier(2)
        out: dict[str, object] = {}

        def request(n: int = n, start: threading.Barrier = start, out: dict = out) -> None:
            start.wait(10)
            out["new"] = admit(store, ev(f"e{n}"))

        def retire(start: threading.Barrier = start, out: dict = out) -> None:
            start.wait(10)

            def delete(keys: list[Key]) -> list[Key]:
                time.sleep(0.01)  # the queue deletes' round trips, under the lock
                out["deleted_at"] = time.monotonic()
                return keys

            out["done"] = store.retire_keys([K()], delete)

        threads = [threading.Thread(target=request), threading.Thread(target=retire)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        done = out["done"]
        retired = bool(done.retired)  # type: ignore[attr-defined]
        if retired:
            assert out["new"] == [K()], f"round {n}: published into a deleted queue"
        assert K() in store.all_keys()  # its event waits: the key is in the mapping
        assert store.status_of(f"e{n}") is Status.PENDING
        store.cancel(f"e{n}")


# -- a dispatcher shard's retirement, fenced by its partitions --------------------------
#: partitions of the shard tests
P = 4


def fences_of_a_lost_partition(store: Store, host: str) -> tuple[PartitionFence, PartitionFence]:
    """Shard "a" took ``host``'s partition, then gave it up (a release, as after a stall
    its lease would expire) and shard "b" took it: a's fence (its old token), b's."""
    partition = pl.partition_of(host, P)
    with store.engine.begin() as conn:
        pl.ensure(conn, range(P))
        old = pl.take(conn, "a", partition, 60.0)
    with store.engine.begin() as conn:
        pl.release(conn, "a", [partition])
    with store.engine.begin() as conn:
        new = pl.take(conn, "b", partition, 60.0)
    assert old is not None and new == old + 1
    return PartitionFence("a", P, {partition: old}), PartitionFence("b", P, {partition: new})


def idle_key(store: Store, vm: str = "v") -> None:
    """A key in the mapping that no event waits for."""
    admit(store, ev(f"e-{vm}", vm=vm))
    store.cancel(f"e-{vm}")


def test_a_shard_that_lost_the_partition_retires_nothing(store: Store) -> None:
    """A shard that stalled past its lease finds keys idle that another shard now
    consumes: its fence fails before any queue is deleted (the broker would cancel the
    other shard's consumer), and the transaction changes nothing."""
    idle_key(store)
    stale, _ = fences_of_a_lost_partition(store, "h")
    version = store.mapping_version()
    asked: list[Key] = []

    def delete(keys: list[Key]) -> list[Key]:
        asked.extend(keys)
        return keys

    with pytest.raises(LeaseLost):
        store.retire_keys([K()], delete, stale)
    assert asked == []  # no queue deleted
    assert K() in store.all_keys()
    assert store.mapping_version() == version


def test_a_shard_holding_the_partition_retires_as_a_single_dispatcher(store: Store) -> None:
    idle_key(store, "v1")
    idle_key(store, "v2")
    _, holding = fences_of_a_lost_partition(store, "h")
    version = store.mapping_version()
    done = store.retire_keys([K(vm="v1"), K(vm="v2")], lambda keys: keys[:1], holding)
    assert done.retired == [K(vm="v1")] and done.kept == [K(vm="v2")]
    assert done.delta is not None and done.delta.version == version + 1
    assert K(vm="v1") not in store.all_keys()
    assert K(vm="v2") in store.all_keys()


def test_a_shards_round_that_lost_the_partition_stops_no_consumer(store: Store) -> None:
    """The dispatcher's side: the fence is asked for every round (a shard's partitions
    change), and a round it fails stopped no consumer and forgot no key: the error ends
    the session, as any ledger error."""
    idle_key(store)
    stale, _ = fences_of_a_lost_partition(store, "h")
    version = store.mapping_version()
    settings = DispatcherSettings(key_idle_seconds=60.0)
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    state.add_key("h", "v", "p", now=time.time() - 1000)  # idle for long
    mapping = MappingFollower(settings, store, state)  # no session: no queue consumed
    asked: list[PartitionFence] = []

    def fence() -> PartitionFence:
        asked.append(stale)
        return stale

    retirement = Retirement(settings, store, state, mapping, fence=fence)
    with pytest.raises(LeaseLost):
        retirement.maybe_retire(cast(Any, None))
    assert asked == [stale]
    assert retirement._stopped == [] and retirement.retired_total == 0
    assert state.stats()["hosts"].keys() == {"h"}  # the key is still the dispatcher's
    assert K() in store.all_keys()
    assert store.mapping_version() == version
