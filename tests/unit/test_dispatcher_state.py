"""Tests for scheduler.dispatcher.state.DispatcherState: the Dispatcher behind one lock."""

from __future__ import annotations

import itertools
import threading

from scheduler.dispatcher.dispatcher import Dispatcher, Known, Limits
from scheduler.dispatcher.limits import Hold, NamedLimits
from scheduler.dispatcher.state import DispatcherState
from shared.models import Action, HostView, MappingSnapshot, PolicyView, VmEventMessage, VmView


def ev(event_id: str, host: str = "h", vm: str = "v", policy: str = "p") -> VmEventMessage:
    return VmEventMessage(
        id=event_id, host=host, vm=vm, policy=policy, action=Action.HEAL, accepted_at=0.0
    )


def make(max_parallel: int = 10, per_vm: int = 1, per_host: int = 0) -> DispatcherState[str]:
    return DispatcherState(Dispatcher(Limits(max_parallel, per_vm, per_host)))


def ids(state: DispatcherState[str], size: int = 100) -> list[str]:
    return [h.event.id for h in state.pick_batch(size, lambda: 0.0)]


def test_offer_knows_and_pick_batch() -> None:
    s = make()
    assert s.knows("a") is Known.NEW
    assert s.offer(ev("a"), "msg-a")
    assert s.knows("a") is Known.HELD
    assert not s.offer(ev("a"), "again")
    assert [(h.event.id, h.handle) for h in s.pick_batch(10, lambda: 0.0)] == [("a", "msg-a")]
    assert s.knows("a") is Known.IN_FLIGHT
    assert s.in_flight_ids() == ["a"]
    assert s.in_flight_count() == 1


def test_pick_batch_stops_at_its_size_and_reads_the_clock_per_pick() -> None:
    s = make()
    for i in range(5):
        s.offer(ev(f"e{i}", vm=f"v{i}"), f"m{i}")
    clock = itertools.count(1.0)
    assert len(s.pick_batch(3, lambda: next(clock))) == 3
    assert [d["at"] for d in s.recent_dispatches(10)] == [1.0, 2.0, 3.0]
    assert len(s.pick_batch(3, lambda: next(clock))) == 2
    assert s.pick_batch(3, lambda: next(clock)) == []


def test_replace_stale_drops_the_in_flight_count_and_holds_the_delivery() -> None:
    s = make()
    s.offer(ev("a"), "first")
    assert ids(s) == ["a"]
    assert s.replace_stale(ev("a"), "second")
    assert s.knows("a") is Known.HELD
    assert s.stats()["dispatched_total"] == 0  # the stale pick is undone, not completed
    assert s.stats()["completed_total"] == 0
    assert [h.handle for h in s.pick_batch(10, lambda: 0.0)] == ["second"]


def test_replace_stale_refused_when_a_delivery_is_held_too() -> None:
    s = make()
    s.offer(ev("a"), "held")
    s.restore([("a", "h", "v")])  # counted in flight and held at once
    assert s.knows("a") is Known.IN_FLIGHT
    assert not s.replace_stale(ev("a"), "another")
    assert s.in_flight_count() == 0


def test_abort_complete_and_restore_take_many() -> None:
    s = make()
    s.restore([("r1", "h1", "v"), ("r2", "h2", "v"), ("r1", "h1", "v")])
    assert sorted(s.in_flight_ids()) == ["r1", "r2"]
    s.complete(["r1", "unknown"])
    assert s.in_flight_ids() == ["r2"]
    assert s.stats()["completed_total"] == 1
    for i in range(3):
        s.offer(ev(f"e{i}", host=f"x{i}"), f"m{i}")
    assert len(ids(s)) == 3
    s.abort(f"e{i}" for i in range(3))
    assert s.in_flight_ids() == ["r2"]
    assert s.stats()["dispatched_total"] == 0


def test_load_mapping_sets_order_and_availability() -> None:
    s = make()
    snapshot = MappingSnapshot(
        version=3,
        hosts={
            "zeta": HostView(
                available=True,
                vms={"v": VmView(available=False, policies={"p": PolicyView(queued=0)})},
            ),
            "alpha": HostView(
                available=False,
                vms={"v": VmView(available=True, policies={"p": PolicyView(queued=0)})},
            ),
            "mid": HostView(
                available=True,
                vms={"v": VmView(available=True, policies={"p": PolicyView(queued=0)})},
            ),
        },
    )
    s.load_mapping(snapshot)
    assert list(s.stats()["hosts"]) == ["zeta", "alpha", "mid"]
    for host in ("zeta", "alpha", "mid"):
        s.offer(ev(host, host=host), host)
    assert ids(s) == ["mid"]  # zeta's VM and the host alpha are unavailable
    s.set_host_available("alpha", True)
    s.set_vm_available("zeta", "v", True)
    assert ids(s) == ["zeta", "alpha"]  # the mapping's order, after mid


def test_mapping_operations() -> None:
    s = make()
    for host in ("h2", "h1"):
        s.add_key(host, "v", "p")
    s.offer(ev("a", host="h1"), "m1")
    s.offer(ev("b", host="h2"), "m2")
    s.offer(ev("c", host="h2", policy="q"), "m3")
    assert [h.handle for h in s.remove_vm("h2", "v")] == ["m2", "m3"]
    assert s.knows("b") is Known.NEW
    assert [h.handle for h in s.drop_held()] == ["m1"]
    assert s.stats()["held"] == 0


def test_pause_and_resume() -> None:
    s = make()
    s.offer(ev("a"), "m")
    s.pause()
    assert s.stats()["paused"] is True
    assert ids(s) == []
    s.resume()
    assert s.stats()["paused"] is False
    assert ids(s) == ["a"]


def test_set_limits_changes_some_and_returns_all() -> None:
    s = make(max_parallel=10, per_vm=1, per_host=0)
    for p in ("p1", "p2"):
        s.offer(ev(p, policy=p), p)
    assert ids(s) == ["p1"]
    assert s.set_limits({"per_vm": 2}) == {"max_parallel": 10, "per_vm": 2, "per_host": 0}
    assert ids(s) == ["p2"]
    assert s.set_limits({}) == {"max_parallel": 10, "per_vm": 2, "per_host": 0}
    assert s.set_limits({"max_parallel": 3, "per_host": 1})["per_host"] == 1
    assert s.stats()["limits"] == {"max_parallel": 3, "per_vm": 2, "per_host": 1}


def test_two_threads_keep_the_counts_right() -> None:
    """The loop's operations and the admin API's, at once: nothing is lost or torn."""
    s = make(max_parallel=1000, per_vm=1000)
    n = 2000
    done = threading.Event()
    errors: list[BaseException] = []

    def admin() -> None:
        try:
            while not done.is_set():
                st = s.stats()
                assert st["in_flight"] <= st["dispatched_total"]
                s.recent_dispatches(10)
                s.set_limits({"per_host": 0})
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=admin)
    thread.start()
    try:
        for i in range(n):
            s.offer(ev(f"e{i}", policy=f"p{i % 7}"), f"m{i}")
            for held in s.pick_batch(8, lambda: 0.0):
                s.complete([held.event.id])
    finally:
        done.set()
        thread.join()
    assert not errors
    st = s.stats()
    assert (st["dispatched_total"], st["completed_total"], st["in_flight"]) == (n, n, 0)


def test_the_global_named_use_counts_the_others_part_with_this_shards_own() -> None:
    """The ledger's count of a limit's use, less this shard's own, is the other shards':
    with 1 of its own and 2 in all, a limit of 2 is full; with 1 in all (its own), not.
    Its own finished in the ledger but not yet here count nothing below 0."""
    s: DispatcherState[str] = DispatcherState(
        Dispatcher(Limits(10, 1, 0), named=NamedLimits(actions={"live_migrate": 2}))
    )
    s.restore([("m1", "h1", "a", "live_migrate", None)])
    migration = ev("m2", "h2", "b").model_copy(update={"action": Action.LIVE_MIGRATE})
    assert s.offer(migration, "msg")
    s.set_global_named({Hold("action", "live_migrate"): 2})
    assert ids(s) == []
    assert s.limit_holds("h2", "b", "p") == ["action limit live_migrate 2/2 (1 on other shards)"]
    s.set_global_named({Hold("action", "live_migrate"): 0})
    assert ids(s) == ["m2"]
    assert s.named_config() == NamedLimits(actions={"live_migrate": 2})
