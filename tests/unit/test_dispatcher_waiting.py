"""Tests for Dispatcher.why: every reason the dispatcher gives for a held head, each from
a Dispatcher in the state that causes it (pure, no I/O)."""

from __future__ import annotations

import pytest

from scheduler.dispatcher.dispatcher import Classes, Dispatcher, Limits
from scheduler.dispatcher.limits import NamedLimits
from scheduler.dispatcher.waiting import CHECKS
from shared.models import Action, VmEventMessage
from shared.priority import Priority
from shared.waiting import TITLES, Reason, Waiting, ordinal, title


def ev(
    event_id: str,
    host: str = "h",
    vm: str = "v",
    policy: str = "p",
    priority: Priority | None = None,
) -> VmEventMessage:
    return VmEventMessage(
        id=event_id,
        host=host,
        vm=vm,
        policy=policy,
        action=Action.HEAL,
        accepted_at=0.0,
        priority=priority,
    )


def dispatcher(max_parallel: int = 10, per_vm: int = 1, per_host: int = 0) -> Dispatcher[str]:
    return Dispatcher(Limits(max_parallel=max_parallel, per_vm=per_vm, per_host=per_host))


def held(d: Dispatcher[str], *events: VmEventMessage) -> None:
    for e in events:
        assert d.offer(e, f"m-{e.id}")


def why(d: Dispatcher[str], event_id: str) -> Waiting:
    got = d.why(event_id)
    assert got is not None, f"{event_id} is not held"
    assert got.source == "dispatcher"
    return got


def test_not_held_is_none() -> None:
    d = dispatcher()
    assert d.why("nope") is None
    held(d, ev("a"))
    assert d.pick(0.0) is not None
    assert d.why("a") is None  # in flight: not waiting


def test_next_in_turn_when_nothing_holds_it() -> None:
    d = dispatcher()
    held(d, ev("a"), ev("b", vm="w"))
    got = why(d, "a")
    assert got.reason == Reason.NEXT_IN_TURN
    assert got.priority == "normal"
    assert "1 other ready key of class normal" in got.text


def test_paused() -> None:
    d = dispatcher()
    held(d, ev("a"))
    d.paused = True
    assert why(d, "a").reason == Reason.PAUSED


def test_host_unavailable() -> None:
    d = dispatcher()
    held(d, ev("a", host="h1"))
    d.set_host_available("h1", False)
    got = why(d, "a")
    assert (got.reason, got.text) == (Reason.HOST_UNAVAILABLE, "host h1 is unavailable")
    d.set_host_available("h1", True)
    assert why(d, "a").reason == Reason.NEXT_IN_TURN


def test_vm_unavailable() -> None:
    d = dispatcher()
    held(d, ev("a", vm="v1"))
    d.set_vm_available("h", "v1", False)
    got = why(d, "a")
    assert (got.reason, got.text) == (Reason.VM_UNAVAILABLE, "VM v1 on host h is unavailable")


def test_vm_busy_names_the_event_in_action() -> None:
    d = dispatcher(per_vm=1)
    held(d, ev("first", policy="p"), ev("second", policy="q"))
    assert d.pick(0.0) is not None
    got = why(d, "second")
    assert got.reason == Reason.VM_BUSY
    assert got.event == "first"
    assert (got.in_use, got.limit) == (1, 1)
    assert got.text == "VM v busy with first (1/1 per VM)"
    d.complete("first")
    assert why(d, "second").reason == Reason.NEXT_IN_TURN


def test_vm_busy_with_several() -> None:
    d = dispatcher(per_vm=2)
    held(d, ev("a", policy="p"), ev("b", policy="q"), ev("c", policy="r"))
    assert d.pick(0.0) is not None and d.pick(0.0) is not None
    got = why(d, "c")
    assert got.text == "VM v busy with a and 1 more (2/2 per VM)"


def test_host_limit() -> None:
    d = dispatcher(per_host=1)
    held(d, ev("a", vm="v1"), ev("b", vm="v2"))
    assert d.pick(0.0) is not None
    got = why(d, "b")
    assert got.reason == Reason.HOST_LIMIT
    assert (got.in_use, got.limit) == (1, 1)
    assert "host h at its limit: 1/1" in got.text


def test_global_limit() -> None:
    d = dispatcher(max_parallel=1)
    held(d, ev("a", host="h1"), ev("b", host="h2"))
    assert d.pick(0.0) is not None
    got = why(d, "b")
    assert got.reason == Reason.GLOBAL_LIMIT
    assert (got.in_use, got.limit) == (1, 1)
    assert got.text == "all slots busy: 1/1 actions in flight (MAX_PARALLEL)"


def test_behind_in_key_with_more_than_one_head_held() -> None:
    d = dispatcher()
    held(d, ev("a"), ev("b"), ev("c"))  # PREFETCH 3: three heads of one key
    got = why(d, "c")
    assert got.reason == Reason.BEHIND_IN_KEY
    assert (got.ahead, got.event) == (2, "a")
    assert got.text == "3rd in its key (host h, vm v, policy p): behind a and 1 more"
    assert why(d, "a").reason == Reason.NEXT_IN_TURN


def test_class_behind_a_higher_one_then_its_share_comes_round() -> None:
    d: Dispatcher[str] = Dispatcher(
        Limits(max_parallel=100, per_vm=1, per_host=0),
        classes=Classes(min_shares={Priority.BACKGROUND: 0.5}),
    )
    held(
        d, ev("u1", vm="u1", priority=Priority.URGENT), ev("u2", vm="u2", priority=Priority.URGENT)
    )
    held(d, ev("bg", vm="b", priority=Priority.BACKGROUND))
    got = why(d, "bg")
    assert got.reason == Reason.CLASS_BEHIND
    assert got.priority == "background"
    assert got.classes is not None
    assert list(got.classes) == ["urgent", "normal", "background"]
    assert got.classes["urgent"].ready_keys == 2
    assert got.classes["background"].min_share == 0.5
    assert "waits behind urgent (2 keys ready)" in got.text
    # the first pick serves urgent and banks half a pick of credit for background: its
    # share makes it next, so it no longer waits behind urgent
    assert d.pick(0.0) is not None
    assert why(d, "bg").reason == Reason.NEXT_IN_TURN
    assert d.pick(0.0).event.id == "bg"  # type: ignore[union-attr]


def test_action_limit_names_the_action_and_its_use() -> None:
    d = Dispatcher(Limits(10, 1, 0), named=NamedLimits(actions={"heal": 1}))
    held(d, ev("a", vm="v1"), ev("b", vm="v2"))
    assert d.pick(0.0) is not None
    got = why(d, "b")
    assert got.reason == Reason.ACTION_LIMIT
    assert got.text == "action limit heal 1/1 (ACTION_LIMITS)"
    assert (got.in_use, got.limit) == (1, 1)


def test_group_budget_names_the_group_and_its_use() -> None:
    d = Dispatcher(Limits(10, 1, 0), named=NamedLimits(groups={"web": 1}))
    web = [ev(f"w{i}", vm=f"web-{i}").model_copy(update={"group": "web"}) for i in (1, 2)]
    held(d, *web)
    assert d.pick(0.0) is not None
    got = why(d, "w2")
    assert got.reason == Reason.GROUP_BUDGET
    assert got.text == "group web budget 1/1 (GROUP_BUDGETS)"
    assert (got.in_use, got.limit) == (1, 1)
    d.complete("w1")
    assert why(d, "w2").reason == Reason.NEXT_IN_TURN


def test_the_first_reason_wins_in_the_registry_order() -> None:
    d = dispatcher(max_parallel=1)
    held(d, ev("a", host="h1"), ev("b", host="h2"))
    assert d.pick(0.0) is not None
    d.set_host_available("h2", False)
    d.paused = True
    assert why(d, "b").reason == Reason.PAUSED
    d.paused = False
    assert why(d, "b").reason == Reason.HOST_UNAVAILABLE
    d.set_host_available("h2", True)
    assert why(d, "b").reason == Reason.GLOBAL_LIMIT


def test_every_check_has_a_reason_with_a_title() -> None:
    assert len(CHECKS) >= 8
    assert set(TITLES) == set(Reason)
    assert title("vm_busy") == "VM busy"
    assert title("rack_budget") == "rack budget"  # a kind this version does not know


@pytest.mark.parametrize(
    ("n", "said"), [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (22, "22nd")]
)
def test_ordinal(n: int, said: str) -> None:
    assert ordinal(n) == said


def test_limits_use_and_recent_shares() -> None:
    d: Dispatcher[str] = Dispatcher(Limits(max_parallel=4, per_vm=1, per_host=2), log_size=3)
    held(d, ev("a", vm="v1"), ev("b", vm="v2"), ev("c", host="g", priority=Priority.URGENT))
    held(d, ev("d", host="g", vm="w", priority=Priority.BACKGROUND))
    for _ in range(4):
        assert d.pick(0.0) is not None
    use = d.limits_use()
    assert use["max_parallel"] == {"limit": 4, "in_use": 4}
    assert use["per_vm"]["at_limit"] == 4
    assert use["per_host"]["max_in_use"] == 2 and use["per_host"]["at_limit"] == 2
    assert use["per_host"]["busiest"] in ("g", "h")
    recent = d.recent_shares()
    assert recent["window"] == 3  # the log keeps the last 3
    counts = {c: v["dispatched"] for c, v in recent["classes"].items()}
    assert sum(counts.values()) == 3
    d.abort(d.dispatches[-1].event_id)
    assert sum(v["dispatched"] for v in d.recent_shares()["classes"].values()) == 2
    view = d.class_view()
    assert view["window"] == 2
    assert set(view["classes"]["urgent"]) >= {"dispatched", "share", "min_share", "credit"}
