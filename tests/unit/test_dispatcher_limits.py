"""The limits an operator names, pure: per action kind and per VM group (docs/design.md
§5.3). A head a full limit holds is skipped, keeping its key's place; other keys go; a
freed slot lets exactly the heads waiting on it go again; a restarted dispatcher counts
what the ledger has in flight against them."""

from __future__ import annotations

import random
from collections import Counter, deque

from scheduler.dispatcher.dispatcher import Classes, Dispatcher, Known, Limits
from scheduler.dispatcher.limits import Hold, NamedLimits
from scheduler.dispatcher.roundrobin import Weights
from shared.models import Action, VmEventMessage
from shared.priority import Priority

LM, UP, HEAL = Action.LIVE_MIGRATE, Action.UPGRADE, Action.HEAL
U, N, B = Priority.URGENT, Priority.NORMAL, Priority.BACKGROUND


def ev(
    event_id: str,
    host: str = "h",
    vm: str = "v",
    policy: str = "p",
    action: Action = HEAL,
    group: str | None = None,
    priority: Priority | None = None,
) -> VmEventMessage:
    return VmEventMessage(
        id=event_id,
        host=host,
        vm=vm,
        policy=policy,
        action=action,
        accepted_at=0.0,
        group=group,
        priority=priority,
    )


def offer(d: Dispatcher[str], *events: VmEventMessage) -> None:
    for e in events:
        assert d.offer(e, e.id)


def drain(d: Dispatcher[str]) -> list[str]:
    out: list[str] = []
    while (held := d.pick(0.0)) is not None:
        out.append(held.event.id)
    return out


def test_an_action_limit_holds_its_kind_and_lets_others_go() -> None:
    d: Dispatcher[str] = Dispatcher(
        Limits(100, 1, 0), named=NamedLimits(actions={"live_migrate": 2})
    )
    offer(d, *(ev(f"m{i}", f"h{i}", action=LM) for i in range(4)))
    offer(d, *(ev(f"x{i}", f"h{i}", "w") for i in range(4)))
    got = drain(d)
    assert sorted(got) == ["m0", "m1", "x0", "x1", "x2", "x3"]
    assert d.limit_holds("h2", "v", "p") == ["action limit live_migrate 2/2"]
    assert d.stats()["named_limits"]["actions"] == {
        "live_migrate": {"limit": 2, "in_flight": 2, "waiting": 2}
    }
    d.complete("x0")  # another kind's completion frees nothing of it
    assert drain(d) == []
    d.complete("m0")
    assert drain(d) == ["m2"]  # exactly one of those waiting, in round-robin order
    d.complete("m1")
    assert drain(d) == ["m3"]
    assert d.limit_holds("h3", "v", "p") == []


def test_a_held_head_keeps_its_host_turn_for_its_other_vms() -> None:
    """A key blocked by a limit is skipped as if it had been blocked before the pick: its
    host's other VM goes in the host's turn, not after the next host."""
    d: Dispatcher[str] = Dispatcher(
        Limits(100, 1, 0), named=NamedLimits(actions={"live_migrate": 1})
    )
    offer(d, ev("busy", "h0", action=LM))
    assert drain(d) == ["busy"]
    offer(d, ev("m", "h1", "v1", action=LM), ev("a", "h1", "v2"), ev("b", "h2", "v1"))
    assert drain(d) == ["a", "b"]


def test_a_held_head_does_not_hold_its_vm_s_other_policies() -> None:
    d: Dispatcher[str] = Dispatcher(Limits(100, 2, 0), named=NamedLimits(actions={"upgrade": 1}))
    offer(d, ev("u1", "h", "v1", action=UP), ev("u2", "h", "v2", "p", UP), ev("q", "h", "v2", "q"))
    assert drain(d) == ["u1", "q"]


def test_a_group_budget_holds_the_group_s_vms() -> None:
    d: Dispatcher[str] = Dispatcher(Limits(100, 1, 0), named=NamedLimits(groups={"web": 1}))
    offer(d, *(ev(f"u{i}", f"h{i % 2}", f"web-{i}", action=UP, group="web") for i in range(5)))
    offer(d, *(ev(f"o{i}", f"h{i % 2}", f"db-{i}", action=UP, group="db") for i in range(3)))
    got = drain(d)
    assert got == ["u0", "o1", "o0", "o2"]  # one of web, every db (no budget)
    assert d.limit_holds("h1", "web-1", "p") == ["group web budget 1/1"]
    for i in range(1, 5):
        d.complete(f"u{i - 1}")
        assert drain(d) == [f"u{i}"]
    view = d.stats()["named_limits"]["groups"]
    assert view["web"] == {"budget": 1, "in_action": 1, "waiting": 0}


def test_a_default_budget_covers_groups_not_named() -> None:
    d: Dispatcher[str] = Dispatcher(
        Limits(100, 1, 0), named=NamedLimits(groups={"web": 2}, default_group=1)
    )
    offer(d, *(ev(f"w{i}", "h", f"web-{i}", group="web") for i in range(3)))
    offer(d, *(ev(f"d{i}", "h", f"db-{i}", group="db") for i in range(3)))
    offer(d, *(ev(f"n{i}", "h", f"x-{i}") for i in range(3)))  # no group: no budget
    got = drain(d)
    assert Counter(e[0] for e in got) == {"w": 2, "d": 1, "n": 3}


def test_a_vm_in_action_counts_once_in_its_group() -> None:
    """With PER_VM_LIMIT 2, a second action of a VM already in action takes no more of
    its group's budget."""
    d: Dispatcher[str] = Dispatcher(Limits(100, 2, 0), named=NamedLimits(groups={"web": 1}))
    offer(d, ev("a", "h", "web-1", "p", group="web"), ev("b", "h", "web-1", "q", group="web"))
    offer(d, ev("c", "h", "web-2", group="web"))
    assert drain(d) == ["a", "b"]
    d.complete("a")
    assert drain(d) == []
    d.complete("b")
    assert drain(d) == ["c"]


def test_both_limits_hold_one_head_until_both_free() -> None:
    d: Dispatcher[str] = Dispatcher(
        Limits(100, 1, 0), named=NamedLimits(actions={"upgrade": 1}, groups={"web": 1})
    )
    offer(d, ev("a", "h", "web-1", action=UP, group="web"))
    offer(d, ev("b", "h", "x", action=UP))
    offer(d, ev("c", "h", "web-2", action=UP, group="web"))
    assert drain(d) == ["a"]
    assert d.limit_holds("h", "web-2", "p") == [
        "action limit upgrade 1/1",
        "group web budget 1/1",
    ]
    d.complete("a")
    assert drain(d) == ["b"]  # web-2 came up first but is held by the action limit again
    d.complete("b")
    assert drain(d) == ["c"]


def test_limits_changed_live() -> None:
    d: Dispatcher[str] = Dispatcher(Limits(100, 1, 0), named=NamedLimits(actions={"upgrade": 1}))
    offer(d, *(ev(f"u{i}", "h", f"v{i}", action=UP) for i in range(4)))
    assert drain(d) == ["u0"]
    d.set_named_limits(NamedLimits(actions={"upgrade": 3}))
    assert drain(d) == ["u1", "u2"]
    d.set_named_limits(NamedLimits())  # none: every head may go
    assert drain(d) == ["u3"]
    d.set_named_limits(NamedLimits(actions={"upgrade": 1}))  # below use: none go until
    offer(d, ev("u4", "h", "v4", action=UP))
    for i in range(3):
        d.complete(f"u{i}")
        assert drain(d) == []
    d.complete("u3")
    assert drain(d) == ["u4"]


def test_limits_with_classes_and_weights() -> None:
    """The limits hold whichever class is served; a held urgent head lets the lower
    classes go meanwhile."""
    d: Dispatcher[str] = Dispatcher(
        Limits(100, 1, 0),
        classes=Classes(min_shares={N: 0.2, B: 0.1}),
        weights=Weights(hosts={"h1": 3}),
        named=NamedLimits(actions={"live_migrate": 1}, groups={"web": 1}),
    )
    offer(d, ev("u1", "h1", "v1", action=LM, priority=U))
    offer(d, ev("u2", "h1", "v2", action=LM, priority=U))
    offer(d, ev("w1", "h2", "web-1", action=UP, group="web", priority=B))
    offer(d, ev("w2", "h2", "web-2", action=UP, group="web", priority=B))
    offer(d, ev("n1", "h1", "v3", priority=N))
    got = drain(d)
    assert got == ["u1", "n1", "w1"]
    d.complete("u1")
    d.complete("w1")
    assert sorted(drain(d)) == ["u2", "w2"]


def test_a_restarted_dispatcher_counts_the_limits_from_the_ledger() -> None:
    """Across a failover: what the ledger has in flight (action, group) fills the limits
    of the dispatcher that takes over, and its completions free them."""
    named = NamedLimits(actions={"live_migrate": 1}, groups={"web": 1})
    first: Dispatcher[str] = Dispatcher(Limits(100, 1, 0), named=named)
    offer(first, ev("m", "h1", "a", action=LM), ev("w", "h2", "web-1", action=UP, group="web"))
    assert sorted(drain(first)) == ["m", "w"]
    # the ledger's in_flight(), as the standby restores it
    rows = [("m", "h1", "a", "live_migrate", None), ("w", "h2", "web-1", "upgrade", "web")]
    second: Dispatcher[str] = Dispatcher(Limits(100, 1, 0), named=named)
    for row in rows:
        second.restore(*row)
    offer(second, ev("m2", "h1", "b", action=LM), ev("w2", "h2", "web-2", action=UP, group="web"))
    offer(second, ev("x", "h3", "c"))
    assert drain(second) == ["x"]
    second.complete("m")
    assert drain(second) == ["m2"]
    second.complete("w")
    assert drain(second) == ["w2"]


def test_unreached_limits_keep_today_s_order() -> None:
    """Limits set but never full: the same picks, in the same order, as none set."""
    rnd = random.Random(3)
    events = [
        ev(
            f"e{i}",
            f"h{rnd.randint(0, 5)}",
            f"v{rnd.randint(0, 5)}",
            f"p{rnd.randint(0, 2)}",
            rnd.choice(list(Action)),
            rnd.choice(["web", "db", None]),
        )
        for i in range(400)
    ]
    orders = []
    for named in (None, NamedLimits(actions={a.value: 1000 for a in Action}, default_group=1000)):
        d: Dispatcher[str] = Dispatcher(Limits(8, 1, 2), named=named)
        offer(d, *events)
        order = drain(d)
        while d.in_flight:
            d.complete(sorted(d.in_flight)[0])
            order.extend(drain(d))
        orders.append(order)
    assert orders[0] == orders[1] and len(orders[0]) == 400


def test_a_give_back_of_a_held_head_is_checked_again() -> None:
    d: Dispatcher[str] = Dispatcher(Limits(100, 1, 0), named=NamedLimits(actions={"upgrade": 1}))
    offer(d, ev("a", "h", "v1", action=UP), ev("b", "h", "v2", action=UP))
    held = d.pick(0.0)
    assert held is not None and held.event.id == "a"
    assert drain(d) == []
    d.give_back(held)  # its slot is free again: the next in turn takes it
    assert drain(d) == ["b"]
    assert d.limit_holds("h", "v1", "p") == ["action limit upgrade 1/1"]
    d.complete("b")
    assert drain(d) == ["a"]


def test_external_use_holds_a_head_and_its_drop_releases_it() -> None:
    """A dispatcher shard counts the other shards' use of a limit with its own: a head
    whose limit they fill waits, its key skipped while others go; when their use falls,
    exactly the heads waiting on that limit go again."""
    d: Dispatcher[str] = Dispatcher(
        Limits(100, 1, 0), named=NamedLimits(actions={"live_migrate": 2}, groups={"web": 1})
    )
    d.set_external_named({Hold("action", "live_migrate"): 1})
    offer(d, ev("m1", "h1", "a", action=LM), ev("m2", "h2", "b", action=LM))
    assert drain(d) == ["m1"]  # m2 waits: 1 here, 1 on another shard
    assert d.limit_holds("h2", "b", "p") == ["action limit live_migrate 2/2 (1 on other shards)"]
    offer(d, ev("w1", "h3", "web-1", action=UP, group="web"), ev("x", "h4", "c"))
    d.set_external_named({Hold("action", "live_migrate"): 1, Hold("group", "web"): 1})
    assert drain(d) == ["x"]  # w1's group is full elsewhere, m2's action too
    assert d.limit_holds("h3", "web-1", "p") == ["group web budget 1/1 (1 on other shards)"]
    d.set_external_named({Hold("group", "web"): 1})  # the others' migration ended
    assert drain(d) == ["m2"]
    assert d.limit_holds("h3", "web-1", "p") != []
    d.set_external_named({})
    assert drain(d) == ["w1"]
    view = d.stats()["named_limits"]
    assert view["actions"]["live_migrate"] == {"limit": 2, "in_flight": 2, "waiting": 0}
    assert view["groups"]["web"] == {"budget": 1, "in_action": 1, "waiting": 0}


def test_a_head_the_ledger_refused_waits_on_its_limit_until_it_frees() -> None:
    """A pick the ledger refused (the shards together at the limit, the others' use not
    counted here yet) is held again first in line, its key waiting on that limit and not
    proposed again; a completion of the limit here, or a count of the others' use that
    leaves room, lets it go — before the heads behind it."""
    d: Dispatcher[str] = Dispatcher(
        Limits(100, 1, 0), named=NamedLimits(actions={"live_migrate": 2})
    )
    offer(d, ev("m1", "h1", "a", action=LM), ev("m2", "h2", "b", action=LM))
    offer(d, ev("x", "h2", "c"))
    m1, m2 = d.pick(0.0), d.pick(0.0)
    assert m1 is not None and m2 is not None and m2.event.id == "m2"
    d.refuse(m2, Hold("action", "live_migrate"))
    assert "m2" not in d.in_flight and d.knows("m2") is Known.HELD
    assert drain(d) == ["x"]  # not m2 again: its key waits on the limit
    assert d.limit_holds("h2", "b", "p") == ["action limit live_migrate 1/2"]
    d.set_external_named({Hold("action", "live_migrate"): 1})  # the ledger's count: full
    assert drain(d) == []
    d.set_external_named({})  # the other shard's migration ended
    assert drain(d) == ["m2"]
    d.refuse(m1, Hold("action", "live_migrate"))  # refused after all: waits again
    assert drain(d) == []
    d.complete("m2")  # a slot of the limit freed here
    assert drain(d) == ["m1"]


def test_a_removed_vm_or_dropped_heads_leave_nothing_waiting() -> None:
    d: Dispatcher[str] = Dispatcher(Limits(100, 1, 0), named=NamedLimits(groups={"web": 1}))
    offer(d, *(ev(f"w{i}", "h", f"web-{i}", group="web") for i in range(3)))
    assert drain(d) == ["w0"]
    assert d.stats()["named_limits"]["groups"]["web"]["waiting"] == 2
    d.remove_vm("h", "web-1")
    assert d.stats()["named_limits"]["groups"]["web"]["waiting"] == 1
    assert [h.event.id for h in d.drop_held()] == ["w2"]
    assert d.stats()["named_limits"]["groups"]["web"]["waiting"] == 0
    offer(d, ev("w2", "h", "web-2", group="web"))
    d.complete("w0")
    assert drain(d) == ["w2"]


class Reference:
    """What is in flight, by the picks and completions seen, and each key's FIFO."""

    def __init__(self, lim: Limits, named: NamedLimits) -> None:
        self.lim, self.named = lim, named
        self.fifo: dict[tuple[str, str, str], deque[VmEventMessage]] = {}
        self.flights: dict[str, VmEventMessage] = {}

    def counts(self) -> tuple[Counter[str], Counter[tuple[str, str]], Counter[str], Counter[str]]:
        actions = Counter(e.action.value for e in self.flights.values())
        vms = Counter((e.host, e.vm) for e in self.flights.values())
        hosts = Counter(e.host for e in self.flights.values())
        group_of = {(e.host, e.vm): e.group for e in self.flights.values()}
        groups = Counter(g for g in group_of.values() if g is not None)
        return actions, vms, hosts, groups

    def held_by(self, e: VmEventMessage) -> list[str]:
        """Why ``e`` may not go now ([]: it may)."""
        actions, vms, hosts, groups = self.counts()
        why = []
        if len(self.flights) >= self.lim.max_parallel:
            why.append("global")
        if vms[(e.host, e.vm)] >= self.lim.per_vm:
            why.append("vm")
        if self.lim.per_host and hosts[e.host] >= self.lim.per_host:
            why.append("host")
        limit = self.named.action_limit(e.action.value)
        if limit and actions[e.action.value] >= limit:
            why.append("action")
        if e.group is not None and (e.host, e.vm) not in vms:
            budget = self.named.group_budget(e.group)
            if budget and groups[e.group] >= budget:
                why.append("group")
        return why

    def picked(self, e: VmEventMessage) -> None:
        assert self.fifo[(e.host, e.vm, e.policy)].popleft() == e, "FIFO within a key"
        assert self.held_by(e) == [], (e, self.held_by(e))  # no limit exceeded by it
        self.flights[e.id] = e

    def nothing_left_that_could_go(self) -> None:
        for queue in self.fifo.values():
            if queue:
                assert self.held_by(queue[0]), f"{queue[0]} could go but waits"


def test_random_operations_never_exceed_a_limit_and_leave_nothing_that_could_go() -> None:
    """Random offers (kinds, groups, classes, weights), completions, give-backs and live
    limit changes, against a reference keeping each key's FIFO: no pick ever goes over a
    limit, and after every drain each key's head is held by something full."""
    for seed in range(8):
        rnd = random.Random(seed)
        lim = Limits(rnd.choice([3, 6, 50]), rnd.choice([1, 2]), rnd.choice([0, 3]))
        named = NamedLimits(
            actions={"live_migrate": 2, "upgrade": rnd.choice([1, 3])},
            groups={"web": 1, "db": 2},
            default_group=rnd.choice([0, 1]),
        )
        d: Dispatcher[str] = Dispatcher(
            lim,
            classes=Classes(min_shares={N: 0.2, B: 0.1}),
            weights=Weights(hosts={"h0": 2}, policies={"p1": 3}),
            named=named,
        )
        ref = Reference(lim, named)
        group_of = {f"v{i}": rnd.choice(["web", "db", "cache", None]) for i in range(6)}
        for step in range(1500):
            roll = rnd.random()
            if roll < 0.45:
                vm = f"v{rnd.randint(0, 5)}"
                e = ev(
                    f"e{step}",
                    f"h{rnd.randint(0, 2)}",
                    vm,
                    f"p{rnd.randint(0, 1)}",
                    rnd.choice([LM, UP, HEAL, Action.MIGRATE]),
                    group_of[vm],
                    rnd.choice([U, N, B, None]),
                )
                offer(d, e)
                ref.fifo.setdefault((e.host, e.vm, e.policy), deque()).append(e)
            elif roll < 0.75 and ref.flights:
                event_id = rnd.choice(sorted(ref.flights))
                assert d.complete(event_id)
                del ref.flights[event_id]
            elif roll < 0.78:
                named = NamedLimits(
                    actions={"live_migrate": rnd.randint(1, 3), "upgrade": rnd.randint(1, 3)},
                    groups={"web": rnd.randint(1, 2)},
                    default_group=rnd.choice([0, 1, 2]),
                )
                d.set_named_limits(named)
                ref.named = named
            else:
                got = []
                while (held := d.pick(0.0)) is not None:
                    ref.picked(held.event)
                    got.append(held)
                if got and rnd.random() < 0.2:  # the ledger failed: the last goes back
                    back = got[-1].event
                    d.give_back(got[-1])
                    del ref.flights[back.id]
                    ref.fifo[(back.host, back.vm, back.policy)].appendleft(back)
                    continue
                ref.nothing_left_that_could_go()
        # the end: everything completes, and everything offered goes
        while ref.flights or any(ref.fifo.values()):
            for event_id in sorted(ref.flights):
                d.complete(event_id)
            ref.flights.clear()
            while (held := d.pick(0.0)) is not None:
                ref.picked(held.event)
            ref.nothing_left_that_could_go()


def test_the_settings_read_the_limits_and_name_a_bad_one() -> None:
    import pytest
    from pydantic import ValidationError

    from scheduler.dispatcher.settings import DispatcherSettings

    s = DispatcherSettings(
        action_limits="live_migrate=2,migrate=2", group_budgets="web=1,db=1", default_group_budget=3
    )
    assert s.named_limits == NamedLimits(
        actions={"live_migrate": 2, "migrate": 2}, groups={"web": 1, "db": 1}, default_group=3
    )
    assert DispatcherSettings().named_limits == NamedLimits()
    for field, value, said in [
        ("action_limits", "teleport=1", "ACTION_LIMITS: 'teleport' is not an action"),
        ("action_limits", "migrate=0", "ACTION_LIMITS: migrate=0: a limit is an integer"),
        ("group_budgets", "web=x", "GROUP_BUDGETS: web=x: a budget is an integer"),
        ("group_budgets", "bad name=1", "GROUP_BUDGETS"),
    ]:
        with pytest.raises(ValidationError, match=said):
            DispatcherSettings(**{field: value})
