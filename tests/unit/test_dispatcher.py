"""Tests for the Dispatcher: limits, pause, completions, restore (pure, no I/O)."""

from __future__ import annotations

import itertools
import random

import pytest

from scheduler.dispatcher.dispatcher import Dispatcher, Held, Known, Limits
from scheduler.dispatcher.settings import DispatcherSettings
from shared.models import Action, VmEventMessage

# Limits has no defaults of its own (the service builds it from its settings): these are
# the settings' defaults.
_FIELDS = DispatcherSettings.model_fields
MAX_PARALLEL: int = _FIELDS["max_parallel"].default
PER_VM: int = _FIELDS["per_vm_limit"].default
PER_HOST: int = _FIELDS["per_host_limit"].default


def limits(
    max_parallel: int = MAX_PARALLEL, per_vm: int = PER_VM, per_host: int = PER_HOST
) -> Limits:
    return Limits(max_parallel=max_parallel, per_vm=per_vm, per_host=per_host)


def ev(
    event_id: str,
    host: str = "h",
    vm: str = "v",
    policy: str = "p",
    action: Action = Action.HEAL,
) -> VmEventMessage:
    return VmEventMessage(
        id=event_id, host=host, vm=vm, policy=policy, action=action, accepted_at=0.0
    )


def offer(d: Dispatcher[str], *events: VmEventMessage) -> None:
    for e in events:
        assert d.offer(e, f"msg-{e.id}")


def pick_id(d: Dispatcher[str], now: float = 0.0) -> str | None:
    held = d.pick(now)
    return None if held is None else held.event.id


def drain(d: Dispatcher[str]) -> list[str]:
    """Pick until nothing can go (without completing anything)."""
    out: list[str] = []
    while (got := pick_id(d)) is not None:
        out.append(got)
    return out


def per_host_in_flight(d: Dispatcher[str]) -> dict[str, int]:
    return {h: s["in_flight"] for h, s in d.stats()["hosts"].items()}


# -- pick and limits ---------------------------------------------------------------------


def test_pick_on_empty_dispatcher_is_none() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    assert d.pick(0.0) is None
    assert d.dispatched_total == 0


def test_pick_returns_the_held_event_and_handle_and_counts_it_in_flight() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    e = ev("a")
    assert d.offer(e, "handle-a")
    held = d.pick(1.0)
    assert held == Held(e, "handle-a")
    assert d.in_flight == {"a": ("h", "v")}
    assert d.dispatched_total == 1


def test_design_order_with_unbounded_limits() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=100, per_vm=100))
    for h, v, p in itertools.product(["C1", "C2", "C3"], ["VM1", "VM2"], ["pol1", "pol2"]):
        offer(d, ev(f"{h}-{v}-{p}", h, v, p))
    assert drain(d)[:7] == [
        "C1-VM1-pol1",
        "C2-VM1-pol1",
        "C3-VM1-pol1",
        "C1-VM2-pol1",
        "C2-VM2-pol1",
        "C3-VM2-pol1",
        "C1-VM1-pol2",
    ]


@pytest.mark.parametrize("max_parallel", [1, 2, 3, 5])
def test_pick_respects_max_parallel(max_parallel: int) -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=max_parallel))
    offer(d, *(ev(f"e{i}", host=f"h{i}") for i in range(4)))
    picked = drain(d)
    assert len(picked) == min(max_parallel, 4)
    assert len(d.in_flight) == len(picked)
    if max_parallel < 4:
        assert d.complete(picked[0])
        assert pick_id(d) is not None
        assert pick_id(d) is None


def test_per_vm_default_is_one_second_event_waits_for_completion() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10))
    assert d.limits.per_vm == 1
    offer(d, ev("migrate", policy="p1", action=Action.MIGRATE))
    offer(d, ev("resize", policy="p2", action=Action.RESIZE))
    assert pick_id(d) == "migrate"
    assert pick_id(d) is None  # same VM: serialised
    assert d.complete("migrate")
    assert pick_id(d) == "resize"


def test_per_vm_does_not_block_other_vms() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10))
    offer(d, ev("a1", vm="a"), ev("a2", vm="a"), ev("b1", vm="b"))
    assert drain(d) == ["a1", "b1"]


@pytest.mark.parametrize("per_vm", [2, 3])
def test_per_vm_above_one(per_vm: int) -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10, per_vm=per_vm))
    offer(d, *(ev(f"e{i}", policy=f"p{i}") for i in range(4)))
    assert len(drain(d)) == per_vm


def test_per_host_limit() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10, per_host=1))
    offer(d, ev("h1a", "h1", "a"), ev("h1b", "h1", "b"), ev("h2a", "h2", "a"))
    assert drain(d) == ["h1a", "h2a"]
    assert d.complete("h1a")
    assert drain(d) == ["h1b"]
    assert per_host_in_flight(d) == {"h1": 1, "h2": 1}


def test_per_host_zero_means_unlimited() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10, per_host=0))
    offer(d, *(ev(f"e{i}", vm=f"v{i}") for i in range(5)))
    assert len(drain(d)) == 5


def test_pause_and_resume() -> None:
    d: Dispatcher[str] = Dispatcher(limits(), paused=True)
    offer(d, ev("a"))
    assert d.pick(0.0) is None
    assert d.dispatched_total == 0
    d.paused = False
    assert pick_id(d) == "a"


def test_unavailable_vm_and_host_are_skipped_and_kept() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10))
    offer(d, ev("h1v1", "h1", "v1"), ev("h1v2", "h1", "v2"), ev("h2v1", "h2", "v1"))
    d.set_vm_available("h1", "v1", False)
    d.set_host_available("h2", False)
    assert drain(d) == ["h1v2"]
    d.set_vm_available("h1", "v1", True)
    d.set_host_available("h2", True)
    assert sorted(drain(d)) == ["h1v1", "h2v1"]


# -- complete ----------------------------------------------------------------------------


def test_completed_vm_resumes_at_its_place_in_the_rotation() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10))
    for n in (1, 2):
        offer(d, *(ev(f"h{i}#{n}", host=f"h{i}") for i in (1, 2, 3)))
    assert drain(d) == ["h1#1", "h2#1", "h3#1"]
    # completions arrive out of order; the rotation order (after h3) decides
    assert d.complete("h2#1")
    assert d.complete("h1#1")
    assert drain(d) == ["h1#2", "h2#2"]
    assert d.complete("h3#1")
    assert drain(d) == ["h3#2"]


def test_complete_of_unknown_id_is_false_and_not_counted() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    offer(d, ev("a"))
    assert pick_id(d) == "a"
    assert not d.complete("nope")
    assert d.completed_total == 0
    assert d.complete("a")
    assert not d.complete("a")  # a second announcement of the same completion
    assert d.completed_total == 1
    assert d.in_flight == {}
    assert per_host_in_flight(d) == {"h": 0}


def test_offer_of_an_event_in_flight_is_refused() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    offer(d, ev("a"))
    assert pick_id(d) == "a"
    assert not d.offer(ev("a"), "redelivery")
    assert len(d.rr) == 0
    assert d.complete("a")
    assert pick_id(d) is None


def test_offer_of_a_restored_event_is_refused() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    d.restore("a", "h", "v")
    assert not d.offer(ev("a"), "redelivery")


# -- restore -----------------------------------------------------------------------------


def test_restore_counts_toward_max_parallel() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=2))
    d.restore("r1", "h1", "v1")
    d.restore("r2", "h2", "v2")
    offer(d, ev("new", "h3", "v3"))
    assert d.pick(0.0) is None
    assert d.complete("r1")
    assert pick_id(d) == "new"
    assert d.dispatched_total == 1  # restored events were not dispatched by us
    assert d.completed_total == 1


def test_restore_counts_toward_per_vm_and_per_host() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10, per_vm=1, per_host=2))
    d.restore("r1", "h", "v1")
    d.restore("r2", "h", "v2")
    offer(d, ev("same-vm", "h", "v1"), ev("same-host", "h", "v3"), ev("other", "h2", "v1"))
    assert drain(d) == ["other"]
    assert d.complete("r2")
    assert drain(d) == ["same-host"]  # v1 still busy with r1
    assert drain(d) == []  # h at its limit again: r1 and same-host
    assert d.complete("r1")
    assert drain(d) == ["same-vm"]


def test_restore_then_complete_frees_the_vm() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10))
    d.restore("r1", "h", "v")
    offer(d, ev("next", "h", "v"))
    assert d.pick(0.0) is None
    assert d.complete("r1")
    assert pick_id(d) == "next"


def test_restore_of_the_same_id_counts_once() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=2))
    d.restore("r1", "h", "v")
    d.restore("r1", "h", "v")
    assert len(d.in_flight) == 1
    assert d.complete("r1")
    offer(d, ev("next", "h", "v"))
    assert pick_id(d) == "next"


# -- set_limits --------------------------------------------------------------------------


def test_raising_max_parallel_live_allows_more_picks() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=1))
    offer(d, *(ev(f"e{i}", vm=f"v{i}") for i in range(3)))
    assert len(drain(d)) == 1
    d.set_limits(limits(max_parallel=3))
    assert len(drain(d)) == 2


def test_lowering_max_parallel_live_holds_until_below() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=3))
    offer(d, *(ev(f"e{i}", vm=f"v{i}") for i in range(4)))
    picked = drain(d)
    assert len(picked) == 3
    d.set_limits(limits(max_parallel=1))
    assert d.complete(picked[0])
    assert d.complete(picked[1])
    assert d.pick(0.0) is None  # still 1 in flight
    assert d.complete(picked[2])
    assert pick_id(d) == "e3"


def test_lowering_per_vm_below_current_blocks_the_vm() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10, per_vm=2))
    offer(d, ev("a", policy="p1"), ev("b", policy="p2"), ev("c", policy="p3"))
    assert drain(d) == ["a", "b"]
    d.set_limits(limits(max_parallel=10, per_vm=1))
    assert d.complete("a")
    assert d.pick(0.0) is None  # 1 still in flight, limit 1
    assert d.complete("b")
    assert pick_id(d) == "c"


def test_raising_per_vm_live_unblocks_the_vm() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10))
    offer(d, ev("a", policy="p1"), ev("b", policy="p2"))
    assert drain(d) == ["a"]
    d.set_limits(limits(max_parallel=10, per_vm=2))
    assert drain(d) == ["b"]


@pytest.mark.parametrize(("before", "after", "more"), [(1, 2, 1), (1, 0, 2), (2, 1, 0)])
def test_changing_per_host_live(before: int, after: int, more: int) -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10, per_host=before))
    offer(d, *(ev(f"e{i}", vm=f"v{i}") for i in range(3)))
    assert len(drain(d)) == before
    d.set_limits(limits(max_parallel=10, per_host=after))
    assert len(drain(d)) == more


def test_set_limits_shows_in_stats() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    d.set_limits(limits(max_parallel=7, per_vm=2, per_host=3))
    assert d.stats()["limits"] == {"max_parallel": 7, "per_vm": 2, "per_host": 3}


# -- abort -------------------------------------------------------------------------------


def test_abort_undoes_a_pick_without_counting_a_completion() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=1))
    offer(d, ev("dup"), ev("next", vm="v2"), ev("same-vm", policy="q"))
    assert pick_id(d) == "dup"
    d.abort("dup")
    assert d.in_flight == {}
    assert d.completed_total == 0
    assert sorted(drain(d)) == ["next"]  # the global slot is free again
    assert d.complete("next")
    assert drain(d) == ["same-vm"]  # and so is the VM's slot
    assert not d.complete("dup")  # the aborted pick is gone


def test_abort_of_unknown_id_does_nothing() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    d.abort("nope")
    assert d.completed_total == 0
    assert d.in_flight == {}


def test_aborted_pick_is_not_reported_as_a_dispatch() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    offer(d, ev("dup"), ev("real", vm="v2"))
    assert pick_id(d, 1.0) == "dup"
    d.abort("dup")
    assert pick_id(d, 2.0) == "real"
    assert [r["event_id"] for r in d.recent_dispatches(10)] == ["real"]
    assert d.dispatched_total == 1


def test_two_held_messages_of_one_id_do_not_leak_slots() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10, per_vm=2))
    # e.g. a re-posted, never-confirmed event published twice, with PREFETCH >= 2
    d.offer(ev("x"), "first")
    d.offer(ev("x"), "second")
    seen: set[str] = set()
    while (held := d.pick(0.0)) is not None:
        if held.event.id in seen:
            d.abort(held.event.id)  # what the loop does: the ledger says "dispatched already"
        seen.add(held.event.id)
    d.complete("x")  # the worker's completion
    assert d.in_flight == {}
    assert per_host_in_flight(d) == {"h": 0}
    d.set_limits(limits(max_parallel=10, per_vm=1))
    offer(d, ev("y"))
    assert pick_id(d) == "y"


def test_an_event_restored_while_a_copy_of_it_is_held_is_counted_once() -> None:
    """A copy of an event is held; another delivery of it is redelivered and the ledger
    says it is dispatched, so it is counted in flight (restore). With PER_VM_LIMIT >= 2
    the VM was not blocked, so the held copy was picked and counted a second time, and
    the abort of that pick left the VM's count at 1 for ever."""
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10, per_vm=2))
    d.offer(ev("x"), "held copy")
    d.restore("x", "h", "v")
    assert d.pick(0.0) is None  # the held copy is not a second dispatch
    assert [h.handle for h in d.take_duplicates()] == ["held copy"]  # the caller acks it
    assert d.take_duplicates() == []
    assert d.in_flight == {"x": ("h", "v")}
    assert d.stats()["dispatched_total"] == 0
    d.complete("x")
    assert per_host_in_flight(d) == {"h": 0}
    offer(d, ev("y", policy="p1"), ev("z", policy="p2"))
    assert drain(d) == ["y", "z"]  # the VM takes two at once again


# -- dispatch log, stats -----------------------------------------------------------------


def test_dispatch_log_records_order_and_the_time_passed_in() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10, per_vm=10))
    offer(
        d,
        ev("a", "h1", "v", "p", Action.MIGRATE),
        ev("b", "h2", "v", "p", Action.RESIZE),
        ev("c", "h1", "v", "q", Action.STOP),
    )
    for now in (10.0, 20.5, 30.25):
        assert d.pick(now) is not None
    assert d.recent_dispatches(10) == [
        {
            "event_id": "a",
            "host": "h1",
            "vm": "v",
            "policy": "p",
            "action": "migrate",
            "at": 10.0,
            "priority": "normal",
        },
        {
            "event_id": "b",
            "host": "h2",
            "vm": "v",
            "policy": "p",
            "action": "resize",
            "at": 20.5,
            "priority": "normal",
        },
        {
            "event_id": "c",
            "host": "h1",
            "vm": "v",
            "policy": "q",
            "action": "stop",
            "at": 30.25,
            "priority": "normal",
        },
    ]
    assert [r["event_id"] for r in d.recent_dispatches(2)] == ["b", "c"]
    assert d.recent_dispatches(0) == []


def test_dispatch_log_is_bounded() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10, per_vm=10), log_size=2)
    offer(d, *(ev(f"e{i}", policy=f"p{i}") for i in range(3)))
    assert len(drain(d)) == 3
    assert [r["event_id"] for r in d.recent_dispatches(10)] == ["e1", "e2"]
    assert d.dispatched_total == 3


def test_stats_shape() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=5, per_vm=1, per_host=0), paused=False)
    offer(d, ev("a", "h1", "v1"), ev("b", "h1", "v1", "q"), ev("c", "h2", "v1"))
    assert pick_id(d) == "a"
    assert d.stats() == {
        "limits": {"max_parallel": 5, "per_vm": 1, "per_host": 0},
        "paused": False,
        "in_flight": 1,
        "held": 2,
        "ready_keys": 2,
        "ready_hosts": 1,  # h1's only VM is busy
        "dispatched_total": 1,
        "completed_total": 0,
        "hosts": {"h1": {"in_flight": 1, "held": 1}, "h2": {"in_flight": 0, "held": 1}},
        "limits_use": {
            "max_parallel": {"limit": 5, "in_use": 1},
            "per_vm": {"limit": 1, "max_in_use": 1, "busiest": "h1/v1", "at_limit": 1},
            "per_host": {"limit": 0, "max_in_use": 1, "busiest": "h1", "at_limit": 0},
            "per_action": {},
            "per_group": {},
        },
        # the action limits and group budgets (none set), with their use
        "named_limits": {"actions": {}, "groups": {}, "default_group_budget": 0},
    }


def test_stats_hosts_are_in_first_appearance_order() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    for host in ("zeta", "alpha", "mid"):
        d.add_key(host, "v", "p")
    assert list(d.stats()["hosts"]) == ["zeta", "alpha", "mid"]


def test_add_key_fixes_the_order_before_events_arrive() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10))
    for host in ("h1", "h2", "h3"):
        d.add_key(host, "v", "p")
    offer(d, ev("c", "h3"), ev("b", "h2"), ev("a", "h1"))
    assert drain(d) == ["a", "b", "c"]


# -- remove_vm, drop_held ----------------------------------------------------------------


def test_remove_vm_returns_its_held_events() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10))
    offer(d, ev("p1", policy="p1"), ev("q1", policy="q1"), ev("p2", policy="p1"))
    offer(d, ev("other", vm="v2"))
    held = d.remove_vm("h", "v")
    assert [(x.event.id, x.handle) for x in held] == [
        ("p1", "msg-p1"),
        ("p2", "msg-p2"),
        ("q1", "msg-q1"),
    ]
    assert drain(d) == ["other"]
    assert d.remove_vm("h", "v") == []
    assert d.remove_vm("nope", "v") == []


def test_remove_vm_keeps_its_in_flight_events_counted() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=1))
    offer(d, ev("running"), ev("waiting", policy="q"))
    assert pick_id(d) == "running"
    assert [x.event.id for x in d.remove_vm("h", "v")] == ["waiting"]
    offer(d, ev("elsewhere", vm="v2"))
    assert d.pick(0.0) is None  # the removed VM's action still holds the global slot
    assert d.complete("running")
    assert pick_id(d) == "elsewhere"


def test_drop_held_empties_but_keeps_order_and_in_flight() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10))
    offer(d, ev("h1", "h1"), ev("h2", "h2"), ev("h3", "h3"), ev("h1b", "h1", policy="q"))
    assert pick_id(d) == "h1"
    dropped = d.drop_held()
    assert sorted(x.event.id for x in dropped) == ["h1b", "h2", "h3"]
    assert len(d.rr) == 0
    assert d.stats()["held"] == 0
    assert d.stats()["ready_keys"] == 0
    assert d.pick(0.0) is None
    assert d.in_flight == {"h1": ("h1", "v")}  # in-flight actions are not forgotten
    # redelivered in another order: the first-appearance order still rules
    offer(d, ev("c", "h3"), ev("b", "h2"), ev("a2", "h1", policy="q"))
    assert d.complete("h1")
    assert drain(d) == ["b", "c", "a2"]  # cursor stayed at h1: h2, h3, then h1


# -- knows, and the blocked flags kept once ----------------------------------------------


def test_knows_new_held_and_in_flight() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    assert d.knows("a") is Known.NEW
    offer(d, ev("a"))
    assert d.knows("a") is Known.HELD
    assert pick_id(d) == "a"
    assert d.knows("a") is Known.IN_FLIGHT
    assert d.complete("a")
    assert d.knows("a") is Known.NEW
    d.restore("r", "h", "v")
    assert d.knows("r") is Known.IN_FLIGHT


def test_knows_in_flight_wins_over_held() -> None:
    d: Dispatcher[str] = Dispatcher(limits())
    offer(d, ev("a"))
    d.restore("a", "h", "v")
    assert d.knows("a") is Known.IN_FLIGHT


def test_blocked_flags_in_the_round_robin_follow_the_counts() -> None:
    """Blocked VMs and hosts are kept once, in the round-robin: after any sequence of
    picks, completions and limit changes they are exactly those at their limit."""
    rng = random.Random(7)
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=50, per_vm=1, per_host=0))
    n = 0
    for _ in range(3000):
        roll = rng.random()
        if roll < 0.4:
            n += 1
            offer(d, ev(f"e{n}", f"h{rng.randrange(3)}", f"v{rng.randrange(3)}", f"p{n % 2}"))
        elif roll < 0.7:
            pick_id(d)
        elif roll < 0.95 and d.in_flight:
            d.complete(rng.choice(sorted(d.in_flight)))
        else:
            d.set_limits(
                limits(max_parallel=50, per_vm=rng.randint(1, 3), per_host=rng.randint(0, 4))
            )
        per_vm: dict[tuple[str, str], int] = {}
        per_host: dict[str, int] = {}
        for host, vm in d.in_flight.values():
            per_vm[(host, vm)] = per_vm.get((host, vm), 0) + 1
            per_host[host] = per_host.get(host, 0) + 1
        lim = d.limits
        assert d.rr._vm_blocked == {k for k, c in per_vm.items() if c >= lim.per_vm}
        assert d.rr._host_blocked == {
            h for h, c in per_host.items() if lim.per_host > 0 and c >= lim.per_host
        }


def test_a_fresh_dispatcher_keeps_the_settings_and_the_events_in_flight() -> None:
    """What a shard starts a session with once its partitions moved: no key or head of
    the hosts it served, the operator's limits, pause and dispatch log still there — and
    its events in flight still counted: those of a partition it gave up run on, and the
    limit must count them until they end."""
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=3), log_size=50)
    offer(d, ev("a", host="h1"), ev("b", host="h2", vm="w"), ev("c", host="h3"))
    assert pick_id(d) is not None
    d.paused = True
    d.restore("x", "h9", "v")
    fresh = d.fresh()
    assert fresh.limits == d.limits and fresh.paused and fresh.dispatches.maxlen == 50
    assert list(fresh.dispatches) == list(d.dispatches) and fresh.dispatched_total == 1
    assert set(fresh.in_flight) == set(d.in_flight) and len(fresh.rr) == 0
    assert fresh.demand() == 2  # the hosts of the two in flight
    assert fresh.stats()["limits_use"] == d.stats()["limits_use"]
    assert fresh.complete("x") and not fresh.complete("x")


def test_demand_counts_the_hosts_with_a_head_ready_or_an_action_in_flight() -> None:
    d: Dispatcher[str] = Dispatcher(limits(max_parallel=10))
    offer(d, ev("a", host="h1"), ev("b", host="h1"), ev("c", host="h2"))
    assert d.demand() == 2
    d.restore("x", "h3", "v")
    assert d.demand() == 3
    while pick_id(d) is not None:
        pass
    assert d.demand() == 3  # h1's second event waits for its VM, in flight on h1 anyway
