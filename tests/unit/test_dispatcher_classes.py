"""The Dispatcher with priority classes and weights: each event's class, and the limits
holding across classes (pure, no I/O)."""

from __future__ import annotations

import random
from collections import Counter

from scheduler.dispatcher.dispatcher import Classes, Dispatcher, Limits
from scheduler.dispatcher.roundrobin import Weights
from shared.models import Action, VmEventMessage
from shared.priority import Priority

U, N, B = Priority.URGENT, Priority.NORMAL, Priority.BACKGROUND


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


def drain(d: Dispatcher[str]) -> list[str]:
    out: list[str] = []
    while (held := d.pick(0.0)) is not None:
        out.append(held.event.id)
    return out


def test_an_events_class_is_its_own_else_its_policys_else_normal() -> None:
    d: Dispatcher[str] = Dispatcher(
        Limits(100, 1, 0), classes=Classes(policies={"heal": U, "upgrade": B})
    )
    assert d.class_of(ev("a", policy="heal")) == U
    assert d.class_of(ev("b", policy="heal", priority=B)) == B
    assert d.class_of(ev("c", policy="upgrade")) == B
    assert d.class_of(ev("d", policy="resize")) == N
    for e in [ev("bg", "h1", policy="upgrade"), ev("n", "h2"), ev("u", "h3", policy="heal")]:
        assert d.offer(e, e.id)
    assert drain(d) == ["u", "n", "bg"]


def test_a_policys_class_changed_live_applies_to_heads_offered_after() -> None:
    d: Dispatcher[str] = Dispatcher(Limits(100, 1, 0))
    d.offer(ev("old", "h1", policy="upgrade"), "m")
    d.set_classes(Classes(policies={"upgrade": B}))
    d.offer(ev("new", "h2", policy="upgrade"), "m")
    d.offer(ev("other", "h3", policy="resize"), "m")
    assert drain(d) == ["old", "other", "new"]
    assert d.class_view()["policies"] == {"upgrade": "background"}


def test_a_busy_vm_is_blocked_in_every_class() -> None:
    """Per VM limit 1: an urgent event for a VM running a background action waits for it,
    though urgent goes first; the host limit and the global limit likewise."""
    d: Dispatcher[str] = Dispatcher(Limits(max_parallel=3, per_vm=1, per_host=2))
    d.offer(ev("bg1", "h", "v", "upgrade", B), "m")
    assert drain(d) == ["bg1"]
    d.offer(ev("u1", "h", "v", "heal", U), "m")  # same VM: blocked in the urgent class too
    d.offer(ev("bg2", "h", "w", "upgrade", B), "m")
    d.offer(ev("u2", "h", "x", "heal", U), "m")
    d.offer(ev("u3", "g", "y", "heal", U), "m")
    assert drain(d) == ["u2", "u3"]  # h at its per-host limit 2, then the global limit 3
    assert d.pick(0.0) is None
    d.complete("bg1")
    assert drain(d) == ["u1"]  # v is free, h has a slot: urgent before bg2
    assert d.pick(0.0) is None  # h holds u1 and u2: bg2 waits for a slot of h
    d.complete("u2")
    assert drain(d) == ["bg2"]


def test_limits_hold_across_classes_under_random_load() -> None:
    """Random offers of every class and completions: never more in flight than the global,
    per-host and per-VM limits allow, and every event goes once."""
    rnd = random.Random(7)
    lim = Limits(max_parallel=5, per_vm=1, per_host=2)
    d: Dispatcher[str] = Dispatcher(lim, classes=Classes(min_shares={N: 0.2, B: 0.1}))
    offered: set[str] = set()
    dispatched: list[str] = []
    for i in range(3000):
        if rnd.random() < 0.5:
            e = ev(
                f"e{i}",
                f"h{rnd.randint(0, 3)}",
                f"v{rnd.randint(0, 3)}",
                f"p{rnd.randint(0, 1)}",
                rnd.choice([U, N, B, None]),
            )
            assert d.offer(e, e.id)
            offered.add(e.id)
        elif d.in_flight and rnd.random() < 0.5:
            d.complete(rnd.choice(sorted(d.in_flight)))
        else:
            dispatched.extend(drain(d))
        hosts = Counter(h for h, _ in d.in_flight.values())
        vms = Counter(d.in_flight.values())
        assert len(d.in_flight) <= lim.max_parallel
        assert max(hosts.values(), default=0) <= lim.per_host
        assert max(vms.values(), default=0) <= lim.per_vm
    while d.in_flight or len(d.rr):
        for event_id in list(d.in_flight):
            d.complete(event_id)
        dispatched.extend(drain(d))
    assert sorted(dispatched) == sorted(offered) and len(set(dispatched)) == len(dispatched)


def test_a_give_back_keeps_its_class_and_its_place() -> None:
    d: Dispatcher[str] = Dispatcher(Limits(1, 1, 0))
    d.offer(ev("u", "h1", priority=U), "m")
    d.offer(ev("n", "h2"), "m")
    held = d.pick(0.0)
    assert held is not None and held.event.id == "u"
    d.give_back(held)
    assert drain(d) == ["u"]


def test_host_weights_under_the_global_limit() -> None:
    """Saturated: each completion frees one slot; the hosts' shares follow 1 : 2 : 4."""
    d: Dispatcher[str] = Dispatcher(
        Limits(7, 1, 0), weights=Weights(hosts={"a": 1, "b": 2, "c": 4})
    )
    for host in "abc":
        for i in range(400):
            d.offer(ev(f"{host}{i}", host, f"v{i}"), "m")
    first = drain(d)
    for _ in range(693):
        d.complete(next(iter(d.in_flight)))
        first.extend(drain(d))
    shares = Counter(e[0] for e in first)
    assert shares == {"a": 100, "b": 200, "c": 400}
