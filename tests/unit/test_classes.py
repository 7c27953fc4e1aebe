"""Tests for scheduler.dispatcher.classes.ClassScheduler: priority classes with minimum
shares, weights at every level, FIFO within a key across classes — against a brute-force
reference model, and the properties docs/design.md §5 states."""

from __future__ import annotations

import itertools
import random
from collections import Counter, deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import pytest

from scheduler.dispatcher.classes import ClassScheduler, validate_shares
from scheduler.dispatcher.roundrobin import NestedRoundRobin, Weights
from shared.priority import ORDER, Priority

U, N, B = Priority.URGENT, Priority.NORMAL, Priority.BACKGROUND

Pick = tuple[str, str, str, Any]


def drain(cs: ClassScheduler[Any], limit: int | None = None) -> list[Pick]:
    out: list[Pick] = []
    while (limit is None or len(out) < limit) and (got := cs.next()) is not None:
        out.append(got)
    return out


# --- the reference model ----------------------------------------------------------------------


class RefNode:
    def __init__(self, name: str, ordinal: int) -> None:
        self.name = name
        self.ordinal = ordinal
        self.children: list[RefNode] = []  # order of first appearance
        self.items: deque[tuple[Priority, int]] = deque()  # policies: (class, item), FIFO
        self.cursor: dict[Priority, int] = dict.fromkeys(ORDER, -1)  # ordinal last served
        self.served: dict[Priority, int] = dict.fromkeys(ORDER, 0)  # picks in a row

    def child(self, name: str) -> RefNode | None:
        return next((c for c in self.children if c.name == name), None)


class Reference:
    """Literal semantics of §5: a key is in the class of its oldest item; the class is chosen
    by credit; within it each level scans its children in order of first appearance from
    its cursor, serving the cursor's child again while it can give and has picks left of
    its weight."""

    def __init__(self, shares: dict[Priority, float], weights: Weights) -> None:
        self.root = RefNode("", -1)
        self.ordinals = itertools.count()
        self.shares = {c: Fraction(str(shares.get(c, 0.0))) for c in ORDER}
        self.weights = weights
        self.credit = dict.fromkeys(ORDER, Fraction(0))
        self.host_off: set[str] = set()
        self.host_blk: set[str] = set()
        self.vm_off: set[tuple[str, str]] = set()
        self.vm_blk: set[tuple[str, str]] = set()

    def _get(self, parent: RefNode, name: str) -> RefNode:
        found = parent.child(name)
        if found is None:
            found = RefNode(name, next(self.ordinals))
            parent.children.append(found)
        return found

    def add_key(self, h: str, v: str, p: str) -> RefNode:
        return self._get(self._get(self._get(self.root, h), v), p)

    def push(self, h: str, v: str, p: str, cls: Priority, item: int, front: bool) -> None:
        node = self.add_key(h, v, p)
        if front:
            node.items.appendleft((cls, item))
        else:
            node.items.append((cls, item))

    def vm_ok(self, h: RefNode, v: RefNode) -> bool:
        return (h.name, v.name) not in self.vm_off | self.vm_blk

    def host_ok(self, h: RefNode) -> bool:
        return h.name not in self.host_off | self.host_blk

    def gives(self, h: RefNode, v: RefNode | None, p: RefNode | None, cls: Priority | None) -> bool:
        """Whether (h, v, p), or any child where v or p is None, can give in ``cls`` (any
        class if None)."""
        if not self.host_ok(h):
            return False
        for vm in h.children if v is None else [v]:
            if not self.vm_ok(h, vm):
                continue
            for pol in vm.children if p is None else [p]:
                if pol.items and (cls is None or pol.items[0][0] == cls):
                    return True
        return False

    def scan(
        self,
        node: RefNode,
        cls: Priority,
        can: Callable[[RefNode], bool],
        w: Callable[[RefNode], int],
    ) -> RefNode:
        current = next((c for c in node.children if c.ordinal == node.cursor[cls]), None)
        if current is not None and can(current) and node.served[cls] < w(current):
            node.served[cls] += 1
            return current
        after = [c for c in node.children if c.ordinal > node.cursor[cls]]
        before = [c for c in node.children if c.ordinal <= node.cursor[cls]]
        for c in after + before:
            if can(c):
                node.cursor[cls] = c.ordinal
                node.served[cls] = 1
                return c
        raise AssertionError("nothing to give in a ready class")

    def choose(self) -> Priority | None:
        ready = [c for c in ORDER if any(self.gives(h, None, None, c) for h in self.root.children)]
        for c in ORDER:
            self.credit[c] = self.credit[c] + self.shares[c] if c in ready else Fraction(0)
        if not ready:
            return None
        chosen = next((c for c in ready if self.credit[c] >= 1), ready[0])
        self.credit[chosen] = max(Fraction(0), self.credit[chosen] - 1)
        return chosen

    def next(self) -> tuple[str, str, str, int] | None:
        cls = self.choose()
        if cls is None:
            return None
        wt = self.weights
        h = self.scan(
            self.root, cls, lambda h: self.gives(h, None, None, cls), lambda h: wt.host(h.name)
        )
        v = self.scan(
            h, cls, lambda v: self.gives(h, v, None, cls), lambda v: wt.vm(h.name, v.name)
        )
        p = self.scan(v, cls, lambda p: self.gives(h, v, p, cls), lambda p: wt.policy(p.name))
        return h.name, v.name, p.name, p.items.popleft()[1]

    def remove_vm(self, h: str, v: str) -> list[int]:
        host = self.root.child(h)
        vm = host.child(v) if host else None
        if host is None or vm is None:
            return []
        host.children.remove(vm)
        return [i for p in vm.children for _, i in p.items]

    def clear_items(self) -> list[int]:
        out: list[int] = []
        for p in self.all_policies():
            out.extend(i for _, i in p.items)
            p.items.clear()
        return out

    def all_policies(self) -> Iterator[RefNode]:
        for h in self.root.children:
            for v in h.children:
                yield from v.children

    def held(self, h: str, v: str | None = None) -> int:
        host = self.root.child(h)
        if host is None:
            return 0
        vms = host.children if v is None else [c for c in host.children if c.name == v]
        return sum(len(p.items) for vm in vms for p in vm.children)

    def __len__(self) -> int:
        return sum(len(p.items) for p in self.all_policies())

    def ready_keys(self) -> int:
        return sum(1 for p in self.all_policies() if p.items)

    def ready_hosts(self) -> int:
        return sum(1 for h in self.root.children if self.gives(h, None, None, None))


def _toggle(flags: set[Any], key: Any, on: bool) -> None:
    if on:
        flags.add(key)
    else:
        flags.discard(key)


SHARES = [0.0, 0.1, 0.2, 0.25, 0.3, 0.5]


def random_shares(rnd: random.Random) -> dict[Priority, float]:
    while True:
        shares = {c: rnd.choice(SHARES) for c in ORDER}
        if sum(shares.values()) <= 1:
            return shares


def random_weights(
    rnd: random.Random, hosts: list[str], vms: list[str], pols: list[str], top: int
) -> Weights:
    return Weights(
        hosts={h: rnd.randint(1, top) for h in hosts if rnd.random() < 0.7},
        vms={(h, v): rnd.randint(1, top) for h in hosts for v in vms if rnd.random() < 0.5},
        policies={p: rnd.randint(1, top) for p in pols if rnd.random() < 0.7},
    )


@pytest.mark.parametrize("seed", range(30))
def test_matches_reference_model(seed: int) -> None:
    """Random operations — pushes of every class, at the back and (as a give-back does)
    at the front, picks, every flag, removals, clears, weights and shares changed live —
    give the reference model's picks and counts at every step."""
    rnd = random.Random(seed)
    hosts = rnd.sample(["h0", "h1", "h2", "h3", "h4"], k=rnd.randint(1, 5))
    vms = rnd.sample(["v0", "v1", "v2", "v3"], k=rnd.randint(1, 4))
    pols = rnd.sample(["p0", "p1", "p2"], k=rnd.randint(1, 3))
    classes = rnd.sample(list(ORDER), k=rnd.randint(1, 3))
    top = rnd.choice([1, 2, 4])  # top 1: every weight 1, plain round-robin per class
    shares, weights = random_shares(rnd), random_weights(rnd, hosts, vms, pols, top)
    cs: ClassScheduler[int] = ClassScheduler(shares, weights)
    ref = Reference(shares, weights)
    counter = itertools.count()
    odds = {
        "push": 30,
        "front": 2,
        "next": 30,
        "add_key": 1,
        "host_av": 3,
        "host_blk": 3,
        "vm_av": 4,
        "vm_blk": 8,
        "remove": 1,
        "clear": 0.3,
        "weights": 0.5,
        "shares": 0.5,
    }
    ops, w = list(odds), list(odds.values())
    for step in range(1500):
        op = rnd.choices(ops, w)[0]
        h, v, p = rnd.choice(hosts), rnd.choice(vms), rnd.choice(pols)
        flag = rnd.random() < 0.5
        if op in ("push", "front"):
            item, cls = next(counter), rnd.choice(classes)
            cs.push(h, v, p, cls, item, front=op == "front")
            ref.push(h, v, p, cls, item, front=op == "front")
        elif op == "next":
            assert cs.next() == ref.next(), f"seed={seed} step={step}"
        elif op == "add_key":
            cs.add_key(h, v, p)
            ref.add_key(h, v, p)
        elif op == "host_av":
            cs.set_host_available(h, flag)
            _toggle(ref.host_off, h, not flag)
        elif op == "host_blk":
            cs.set_host_blocked(h, flag)
            _toggle(ref.host_blk, h, flag)
        elif op == "vm_av":
            cs.set_vm_available(h, v, flag)
            _toggle(ref.vm_off, (h, v), not flag)
        elif op == "vm_blk":
            cs.set_vm_blocked(h, v, flag)
            _toggle(ref.vm_blk, (h, v), flag)
        elif op == "remove":
            assert cs.remove_vm(h, v) == ref.remove_vm(h, v)
        elif op == "clear":
            assert cs.clear_items() == ref.clear_items()
        elif op == "weights":
            ref.weights = random_weights(rnd, hosts, vms, pols, top)
            cs.set_weights(ref.weights)
        else:
            new = random_shares(rnd)
            cs.set_min_shares(new)
            ref.shares = {c: Fraction(str(new.get(c, 0.0))) for c in ORDER}
        assert len(cs) == len(ref)
        assert cs.ready_keys() == ref.ready_keys()
        assert cs.ready_hosts() == ref.ready_hosts()
        assert cs.held(h) == ref.held(h)
        assert cs.held(h, v) == ref.held(h, v)
    for h in hosts:
        cs.set_host_available(h, True)
        cs.set_host_blocked(h, False)
        for v in vms:
            cs.set_vm_available(h, v, True)
            cs.set_vm_blocked(h, v, False)
    ref.host_off.clear()
    ref.host_blk.clear()
    ref.vm_off.clear()
    ref.vm_blk.clear()
    expected = []
    while (got := ref.next()) is not None:
        expected.append(got)
    assert drain(cs) == expected
    assert len(cs) == 0


# --- one class, all weights 1: today's order --------------------------------------------------


@pytest.mark.parametrize("cls", list(ORDER))
@pytest.mark.parametrize("seed", range(5))
def test_one_class_is_the_plain_nested_round_robin(cls: Priority, seed: int) -> None:
    rnd = random.Random(seed)
    cs: ClassScheduler[int] = ClassScheduler({N: 0.2, B: 0.1})
    rr: NestedRoundRobin[int] = NestedRoundRobin()
    for step in range(2000):
        h, v, p = f"h{rnd.randint(0, 4)}", f"v{rnd.randint(0, 3)}", f"p{rnd.randint(0, 2)}"
        r = rnd.random()
        if r < 0.45:
            cs.push(h, v, p, cls, step)
            rr.push(h, v, p, step)
        elif r < 0.9:
            assert cs.next() == rr.next()
        elif r < 0.95:
            cs.set_vm_blocked(h, v, r < 0.925)
            rr.set_vm_blocked(h, v, r < 0.925)
        else:
            assert cs.remove_vm(h, v) == rr.remove_vm(h, v)
    assert drain(cs) == [*iter(rr.next, None)]


# --- classes: order and minimum shares --------------------------------------------------------


def flood(cs: ClassScheduler[str], cls: Priority, n: int, hosts: int = 5, tag: str = "") -> None:
    for i in range(n):
        cs.push(f"h{i % hosts}", f"{tag or cls.value}{i}", "pol", cls, f"{cls.value}#{i}")


def classes_of(picks: list[Pick]) -> list[str]:
    return [str(item).split("#")[0] for *_, item in picks]


def test_the_highest_class_goes_first_without_shares() -> None:
    cs: ClassScheduler[str] = ClassScheduler()
    flood(cs, B, 5)
    flood(cs, N, 5)
    flood(cs, U, 5)
    assert classes_of(drain(cs)) == ["urgent"] * 5 + ["normal"] * 5 + ["background"] * 5


def test_an_urgent_flood_leaves_background_its_minimum_share() -> None:
    cs: ClassScheduler[str] = ClassScheduler({N: 0.2, B: 0.1})
    flood(cs, U, 10_000)
    flood(cs, B, 10_000)
    picks = classes_of(drain(cs, 1000))
    assert picks.count("background") == 100  # exactly 10 %, every 10th pick
    assert picks[9::10] == ["background"] * 100
    # normal has no work: its 20 % is lent to urgent, not banked for later
    assert picks.count("urgent") == 900


def test_every_class_gets_at_least_its_share_under_a_three_way_flood() -> None:
    """Each class gets its share, give or take one pick per class above it (when two
    classes' credit comes due at one pick, the higher goes first and the other next)."""
    cs: ClassScheduler[str] = ClassScheduler({N: 0.2, B: 0.1})
    for cls in ORDER:
        flood(cs, cls, 10_000)
    picks = classes_of(drain(cs, 1000))
    for n in range(10, 1001, 10):
        counts = Counter(picks[:n])
        assert counts["normal"] >= n * 0.2 - 1 and counts["background"] >= n * 0.1 - 2
    assert Counter(picks) == {"urgent": 701, "normal": 200, "background": 99}


def test_an_idle_class_banks_nothing() -> None:
    """Background is idle for 1000 picks, then floods: it gets its share from then on,
    not a burst for the time it was idle."""
    cs: ClassScheduler[str] = ClassScheduler({B: 0.1})
    flood(cs, U, 10_000)
    assert classes_of(drain(cs, 1000)) == ["urgent"] * 1000
    flood(cs, B, 1000)
    picks = classes_of(drain(cs, 100))
    assert picks.count("background") == 10 and picks[:9] == ["urgent"] * 9


def test_a_class_with_only_blocked_work_lends_its_share() -> None:
    cs: ClassScheduler[str] = ClassScheduler({B: 0.5})
    flood(cs, U, 100)
    cs.push("h0", "bg-vm", "pol", B, "background#x")
    cs.set_vm_blocked("h0", "bg-vm", True)  # its VM is busy: background has no ready work
    assert classes_of(drain(cs, 50)) == ["urgent"] * 50
    cs.set_vm_blocked("h0", "bg-vm", False)
    assert classes_of(drain(cs, 2)) == ["urgent", "background"]


def test_limits_hold_across_classes() -> None:
    """A VM or host blocked is blocked in every class, including a class made after the
    flag was set."""
    cs: ClassScheduler[str] = ClassScheduler()
    cs.set_vm_blocked("h", "v", True)
    cs.set_host_blocked("g", True)
    for cls in ORDER:
        cs.push("h", "v", cls.value, cls, f"{cls.value}#v")
        cs.push("g", "w", cls.value, cls, f"{cls.value}#g")
    assert cs.next() is None and cs.ready_hosts() == 0
    cs.set_vm_blocked("h", "v", False)
    assert classes_of(drain(cs)) == ["urgent", "normal", "background"]


def test_fifo_within_a_key_across_classes() -> None:
    """A key holding background, then urgent, then background is served in that order,
    each in the class of its oldest item: the urgent one waits for the background head."""
    cs: ClassScheduler[str] = ClassScheduler()
    cs.push("h", "v", "p", B, "b1")
    cs.push("h", "v", "p", U, "u1")
    cs.push("h", "v", "p", B, "b2")
    cs.push("h", "w", "p", N, "n1")
    assert [item for *_, item in drain(cs)] == ["n1", "b1", "u1", "b2"]


def test_a_give_back_of_another_class_goes_first_in_its_key() -> None:
    cs: ClassScheduler[str] = ClassScheduler()
    cs.push("h", "v", "p", B, "b1")
    cs.push("h", "v", "p", U, "u0", front=True)
    cs.push("h", "w", "p", N, "n1")
    assert [item for *_, item in drain(cs)] == ["u0", "n1", "b1"]


@pytest.mark.parametrize(
    "shares",
    [{B: 1.1}, {N: -0.1}, {N: 0.6, B: 0.5}],
    ids=["above-one", "negative", "sum-above-one"],
)
def test_bad_shares_are_refused(shares: dict[Priority, float]) -> None:
    with pytest.raises(ValueError):
        validate_shares(shares)


# --- weights ----------------------------------------------------------------------------------


def host_shares(picks: list[Pick]) -> Counter[str]:
    return Counter(h for h, *_ in picks)


def test_host_weights_give_shares_in_proportion() -> None:
    cs: ClassScheduler[str] = ClassScheduler(weights=Weights(hosts={"a": 1, "b": 2, "c": 4}))
    for host in "abc":
        for i in range(1000):
            cs.push(host, f"v{i}", "p", N, f"{host}{i}")
    picks = drain(cs, 700)
    assert host_shares(picks) == {"a": 100, "b": 200, "c": 400}
    assert [h for h, *_ in picks[:7]] == ["a", "b", "b", "c", "c", "c", "c"]


def test_splitting_a_flood_over_more_vms_or_policies_buys_a_host_nothing() -> None:
    """Host c floods over 100 VMs with 5 policies each, a and b over one VM each: the
    shares stay 1 : 2 : 4, set by the hosts' weights alone."""
    cs: ClassScheduler[str] = ClassScheduler(weights=Weights(hosts={"a": 1, "b": 2, "c": 4}))
    for i in range(1000):
        cs.push("a", "v", "p", N, f"a{i}")
        cs.push("b", "v", "p", N, f"b{i}")
    for i in range(1000):
        cs.push("c", f"v{i % 100}", f"p{i % 5}", N, f"c{i}")
    assert host_shares(drain(cs, 700)) == {"a": 100, "b": 200, "c": 400}


def test_vm_and_policy_weights_apply_within_their_parent() -> None:
    weights = Weights(vms={("h", "big"): 3}, policies={"heal": 2})
    cs: ClassScheduler[str] = ClassScheduler(weights=weights)
    for _i in range(100):
        cs.push("h", "big", "p", N, "big")
        cs.push("h", "small", "p", N, "small")
    assert Counter(item for *_, item in drain(cs, 80)) == {"big": 60, "small": 20}
    cs2: ClassScheduler[str] = ClassScheduler(weights=weights)
    for _i in range(100):
        cs2.push("h", "v", "heal", N, "heal")
        cs2.push("h", "v", "resize", N, "resize")
    assert Counter(item for *_, item in drain(cs2, 90)) == {"heal": 60, "resize": 30}


def test_a_weighted_child_gives_up_its_turn_when_it_cannot_give() -> None:
    """The cursor stays on a weight-4 VM only while it can give: blocked after one pick,
    the turn moves on (and the weight cannot carry over into a burst later)."""
    cs: ClassScheduler[str] = ClassScheduler(weights=Weights(vms={("h", "a"): 4}))
    for i in range(4):
        cs.push("h", "a", "p", N, f"a{i}")
        cs.push("h", "b", "p", N, f"b{i}")
    assert [item for *_, item in drain(cs, 1)] == ["a0"]
    cs.set_vm_blocked("h", "a", True)
    assert [item for *_, item in drain(cs, 1)] == ["b0"]
    cs.set_vm_blocked("h", "a", False)
    assert [item for *_, item in drain(cs, 6)] == ["a1", "a2", "a3", "b1", "b2", "b3"]


def test_weights_change_live() -> None:
    cs: ClassScheduler[str] = ClassScheduler()
    for host in "ab":
        for i in range(100):
            cs.push(host, f"v{i}", "p", N, host)
    assert host_shares(drain(cs, 10)) == {"a": 5, "b": 5}
    cs.set_weights(Weights(hosts={"b": 3}))
    assert cs.weights.host("b") == 3
    assert host_shares(drain(cs, 40)) == {"a": 10, "b": 30}


def test_weights_apply_in_a_class_made_later() -> None:
    cs: ClassScheduler[str] = ClassScheduler(weights=Weights(hosts={"b": 2}))
    for host in "ab":
        for i in range(30):
            cs.push(host, f"v{i}", "p", B, host)
    assert host_shares(drain(cs, 30)) == {"a": 10, "b": 20}


def test_class_stats() -> None:
    cs: ClassScheduler[str] = ClassScheduler({B: 0.25})
    cs.push("h", "v", "p", B, "b1")
    cs.push("h", "v", "p", U, "u1")
    cs.push("h", "w", "p", U, "u2")
    assert cs.next() is not None
    stats = cs.class_stats()
    assert stats["urgent"] == {"held": 1, "keys": 0, "served": 1, "min_share": 0.0, "credit": 0.0}
    assert stats["background"]["held"] == 1 and stats["background"]["keys"] == 1
    assert stats["background"]["min_share"] == 0.25 and stats["background"]["credit"] == 0.25
    assert stats["normal"]["served"] == 0
