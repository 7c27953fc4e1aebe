"""Tests for scheduler.dispatcher.roundrobin.NestedRoundRobin."""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scheduler.dispatcher import roundrobin
from scheduler.dispatcher.roundrobin import NestedRoundRobin

HOSTS = ["C1", "C2", "C3"]
VMS = ["VM1", "VM2"]
POLICIES = ["pol1", "pol2"]

DESIGN_ORDER = [
    ("C1", "VM1", "pol1"),
    ("C2", "VM1", "pol1"),
    ("C3", "VM1", "pol1"),
    ("C1", "VM2", "pol1"),
    ("C2", "VM2", "pol1"),
    ("C3", "VM2", "pol1"),
    ("C1", "VM1", "pol2"),
    ("C2", "VM1", "pol2"),
    ("C3", "VM1", "pol2"),
    ("C1", "VM2", "pol2"),
    ("C2", "VM2", "pol2"),
    ("C3", "VM2", "pol2"),
]


def design_rr(per_key: int = 1) -> NestedRoundRobin[str]:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    for n in range(per_key):
        for h, v, p in itertools.product(HOSTS, VMS, POLICIES):
            rr.push(h, v, p, f"{h}-{v}-{p}#{n}")
    return rr


def drain(rr: NestedRoundRobin[Any]) -> list[tuple[str, str, str, Any]]:
    out = []
    while (got := rr.next()) is not None:
        out.append(got)
    return out


def keys(picks: list[tuple[str, str, str, Any]]) -> list[tuple[str, str, str]]:
    return [(h, v, p) for h, v, p, _ in picks]


# --- design sequence -------------------------------------------------------------------------


@pytest.mark.parametrize("per_key", [1, 2, 3])
def test_design_sequence(per_key: int) -> None:
    rr = design_rr(per_key)
    assert len(rr) == 12 * per_key
    assert rr.ready_keys() == 12
    picks = drain(rr)
    assert keys(picks) == DESIGN_ORDER * per_key
    # FIFO within a key: round n serves item #n of every key.
    assert [item for *_, item in picks] == [
        f"{h}-{v}-{p}#{n}" for n in range(per_key) for h, v, p in DESIGN_ORDER
    ]
    assert rr.next() is None
    assert len(rr) == 0 and rr.ready_keys() == 0 and rr.ready_hosts() == 0


def test_first_appearance_order_not_name_order() -> None:
    rr: NestedRoundRobin[int] = NestedRoundRobin()
    rr.push("b", "y", "q", 1)
    rr.push("a", "x", "p", 2)
    rr.push("b", "x", "p", 3)
    rr.push("b", "y", "p", 4)
    assert keys(drain(rr)) == [("b", "y", "q"), ("a", "x", "p"), ("b", "x", "p"), ("b", "y", "p")]


# --- defects of the original sketch ----------------------------------------------------------


def test_empty_ring_next_is_none() -> None:
    rr: NestedRoundRobin[int] = NestedRoundRobin()
    assert rr.next() is None  # no ZeroDivisionError from a modulo on an empty ring
    assert rr.next() is None
    assert len(rr) == 0 and rr.ready_hosts() == 0 and rr.ready_keys() == 0


def test_empty_child_is_skipped_not_none() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    for h in HOSTS:
        rr.push(h, "VM1", "pol1", h)
    assert rr.next() == ("C1", "VM1", "pol1", "C1")
    rr.push("C1", "VM1", "pol1", "C1b")
    assert rr.next() == ("C2", "VM1", "pol1", "C2")
    assert rr.next() == ("C3", "VM1", "pol1", "C3")
    # C2, C3 are now empty; the cursor is past them and C1 must still be found.
    assert rr.next() == ("C1", "VM1", "pol1", "C1b")
    assert rr.next() is None


def test_empty_key_before_cursor_target_does_not_stop_scan() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    rr.push("h", "v", "p1", "a")
    rr.push("h", "v", "p2", "b")
    rr.push("h", "v", "p3", "c")
    assert rr.next() == ("h", "v", "p1", "a")
    assert rr.next() == ("h", "v", "p2", "b")
    rr.push("h", "v", "p1", "d")  # p1 refills, p2 is empty
    assert rr.next() == ("h", "v", "p3", "c")
    assert rr.next() == ("h", "v", "p1", "d")
    assert rr.next() is None


def test_next_on_all_empty_keys_does_not_block() -> None:
    # The sketch called a blocking get() on an empty queue; here next() must return at once.
    rr = design_rr()
    drain(rr)
    assert rr.ready_keys() == 0
    assert rr.next() is None


def test_remove_vm_takes_it_out_of_rotation() -> None:
    rr = design_rr()
    removed = rr.remove_vm("C2", "VM1")
    assert removed == ["C2-VM1-pol1#0", "C2-VM1-pol2#0"]
    assert len(rr) == 10 and rr.ready_keys() == 10
    assert rr.held("C2") == 2 and rr.held("C2", "VM1") == 0
    assert keys(drain(rr)) == [
        ("C1", "VM1", "pol1"),
        ("C2", "VM2", "pol1"),  # C2's only VM now
        ("C3", "VM1", "pol1"),
        ("C1", "VM2", "pol1"),
        ("C2", "VM2", "pol2"),
        ("C3", "VM2", "pol1"),
        ("C1", "VM1", "pol2"),
        ("C3", "VM1", "pol2"),  # C2 is empty: skipped
        ("C1", "VM2", "pol2"),
        ("C3", "VM2", "pol2"),
    ]
    assert rr.remove_vm("C2", "VM1") == []
    assert rr.remove_vm("nope", "VM1") == []


def test_remove_vm_keeps_host_and_readd_goes_to_end() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    for h in ["C1", "C2"]:
        for v in ["VM1", "VM2", "VM3"]:
            rr.push(h, v, "p", f"{h}{v}")
    assert rr.remove_vm("C1", "VM1") == ["C1VM1"]
    rr.push("C1", "VM1", "p", "C1VM1-new")  # new appearance: after VM3
    assert [k[:2] for k in keys(drain(rr))] == [
        ("C1", "VM2"),
        ("C2", "VM1"),
        ("C1", "VM3"),
        ("C2", "VM2"),
        ("C1", "VM1"),
        ("C2", "VM3"),
    ]
    # Removing the host's only VM keeps the host (and its place).
    rr2: NestedRoundRobin[str] = NestedRoundRobin()
    rr2.push("A", "v", "p", "a")
    rr2.push("B", "v", "p", "b")
    assert rr2.remove_vm("A", "v") == ["a"]
    assert rr2.ready_hosts() == 1
    rr2.push("A", "w", "p", "a2")
    assert keys(drain(rr2)) == [("A", "w", "p"), ("B", "v", "p")]


def test_blocked_vm_gives_nothing_until_unblocked() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    for i in range(3):
        rr.push("h", "v", "p", f"a{i}")
    rr.push("h", "w", "p", "b0")
    assert rr.next() == ("h", "v", "p", "a0")
    rr.set_vm_blocked("h", "v", True)  # action in flight on v
    assert rr.next() == ("h", "w", "p", "b0")
    assert rr.next() is None
    assert rr.held("h", "v") == 2 and rr.ready_hosts() == 0
    rr.set_vm_blocked("h", "v", False)
    assert rr.next() == ("h", "v", "p", "a1")


# --- availability / blocking keep places -----------------------------------------------------


@pytest.mark.parametrize(
    "setter",
    [
        pytest.param(lambda rr, off: rr.set_host_available("C2", not off), id="host-unavailable"),
        pytest.param(lambda rr, off: rr.set_host_blocked("C2", off), id="host-blocked"),
    ],
)
def test_host_skipped_and_resumes_at_its_place(
    setter: Callable[[NestedRoundRobin[str], bool], None],
) -> None:
    rr = design_rr()
    setter(rr, True)
    assert rr.ready_hosts() == 2
    got = [rr.next() for _ in range(4)]
    assert [g[:3] if g else None for g in got] == [
        ("C1", "VM1", "pol1"),
        ("C3", "VM1", "pol1"),
        ("C1", "VM2", "pol1"),
        ("C3", "VM2", "pol1"),
    ]
    assert rr.held("C2") == 4  # items kept
    setter(rr, False)
    # Cursor is at C3: C1 comes next, then C2 at its own place, with its own inner cursors.
    assert keys(drain(rr)) == [
        ("C1", "VM1", "pol2"),
        ("C2", "VM1", "pol1"),
        ("C3", "VM1", "pol2"),
        ("C1", "VM2", "pol2"),
        ("C2", "VM2", "pol1"),
        ("C3", "VM2", "pol2"),
        ("C2", "VM1", "pol2"),
        ("C2", "VM2", "pol2"),
    ]


@pytest.mark.parametrize(
    "setter",
    [
        pytest.param(lambda rr, off: rr.set_vm_available("C1", "VM1", not off), id="vm-unavail"),
        pytest.param(lambda rr, off: rr.set_vm_blocked("C1", "VM1", off), id="vm-blocked"),
    ],
)
def test_vm_skipped_and_comes_back_at_original_place(
    setter: Callable[[NestedRoundRobin[str], bool], None],
) -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    for v in ["VM1", "VM2", "VM3"]:
        for n in range(3):
            rr.push("C1", v, "p", f"{v}#{n}")
    assert rr.next() == ("C1", "VM1", "p", "VM1#0")
    setter(rr, True)
    assert rr.next() == ("C1", "VM2", "p", "VM2#0")
    setter(rr, False)
    # Not appended at the end: VM3 then VM1 (its original slot), then VM2.
    assert [item for *_, item in drain(rr)] == [
        "VM3#0",
        "VM1#1",
        "VM2#1",
        "VM3#1",
        "VM1#2",
        "VM2#2",
        "VM3#2",
    ]


def test_block_vm_the_cursor_would_take_next() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    for v in ["VM1", "VM2", "VM3"]:
        for n in range(2):
            rr.push("h", v, "p", f"{v}#{n}")
    assert rr.next() == ("h", "VM1", "p", "VM1#0")
    rr.set_vm_blocked("h", "VM2", True)  # the one the cursor would serve next
    assert rr.next() == ("h", "VM3", "p", "VM3#0")
    assert rr.next() == ("h", "VM1", "p", "VM1#1")
    rr.set_vm_blocked("h", "VM2", False)
    # Cursor is at VM1, so VM2 (next in order) is served before VM3.
    assert [item for *_, item in drain(rr)] == ["VM2#0", "VM3#1", "VM2#1"]


def test_block_the_vm_just_served_keeps_cursor() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    for v in ["VM1", "VM2", "VM3"]:
        rr.push("h", v, "p", v)
        rr.push("h", v, "p", v + "'")
    rr.next()  # VM1
    rr.next()  # VM2
    rr.set_vm_blocked("h", "VM2", True)
    rr.set_vm_blocked("h", "VM2", False)
    assert [item for *_, item in drain(rr)] == ["VM3", "VM1'", "VM2'", "VM3'"]


def test_flags_for_unseen_host_and_vm_apply_on_creation() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    rr.set_host_available("A", False)
    rr.set_vm_blocked("B", "v", True)
    rr.set_host_blocked("D", True)
    rr.set_host_blocked("D", False)  # unset before it exists: default again
    for h in "ABCD":
        rr.push(h, "v", "p", h)
    assert rr.ready_hosts() == 2
    assert [item for *_, item in drain(rr)] == ["C", "D"]
    rr.set_host_available("A", True)
    rr.set_vm_blocked("B", "v", False)
    assert [item for *_, item in drain(rr)] == ["A", "B"]


def test_flags_survive_remove_vm() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    rr.push("h", "v", "p", "old")
    rr.set_vm_blocked("h", "v", True)
    assert rr.remove_vm("h", "v") == ["old"]
    rr.push("h", "v", "p", "new")  # re-created VM: still blocked (flags are caller state)
    assert rr.next() is None
    rr.set_vm_blocked("h", "v", False)
    assert rr.next() == ("h", "v", "p", "new")


def test_host_gives_only_if_available_and_not_blocked() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    rr.push("h", "v", "p", "x")
    rr.set_host_blocked("h", True)
    rr.set_host_available("h", False)
    rr.set_host_blocked("h", False)
    assert rr.next() is None
    rr.set_host_available("h", True)
    assert rr.next() == ("h", "v", "p", "x")


def test_key_that_empties_and_refills_keeps_its_place() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    for p, n in [("a", 3), ("b", 1), ("c", 3), ("d", 3)]:
        for i in range(n):
            rr.push("h", "v", p, f"{p}{i}")
    assert [rr.next() for _ in range(2)] == [("h", "v", "a", "a0"), ("h", "v", "b", "b0")]
    assert rr.ready_keys() == 3  # b is empty now
    rr.push("h", "v", "b", "b1")
    rr.push("h", "v", "b", "b2")
    # b is back in its slot between a and c (not appended after d).
    assert [item for *_, item in drain(rr)] == [
        "c0",
        "d0",
        "a1",
        "b1",
        "c1",
        "d1",
        "a2",
        "b2",
        "c2",
        "d2",
    ]


def test_remove_vm_returns_policy_order_then_fifo() -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    rr.push("h", "v", "pB", "b1")
    rr.push("h", "v", "pA", "a1")
    rr.push("h", "v", "pB", "b2")
    rr.push("h", "v", "pA", "a2")
    rr.push("h", "w", "pA", "w1")
    assert rr.remove_vm("h", "v") == ["b1", "b2", "a1", "a2"]
    assert len(rr) == 1 and rr.held("h") == 1 and rr.ready_keys() == 1
    assert drain(rr) == [("h", "w", "pA", "w1")]


def test_clear_items_keeps_order_cursors_and_flags() -> None:
    rr = design_rr()
    for _ in range(4):
        rr.next()  # cursor: hosts at C1, C1's VM cursor at VM2
    rr.set_host_blocked("C3", True)
    dropped = rr.clear_items()
    assert len(dropped) == 8 and set(dropped).isdisjoint({"C1-VM1-pol1#0", "C1-VM2-pol1#0"})
    assert len(rr) == 0 and rr.ready_keys() == 0 and rr.ready_hosts() == 0
    assert rr.held("C1") == 0 and rr.held("C2", "VM2") == 0
    assert rr.next() is None
    # Re-push in reverse name order: the original order of first appearance still rules.
    for h, v, p in reversed(DESIGN_ORDER):
        rr.push(h, v, p, "x")
    assert keys(drain(rr)) == [
        ("C2", "VM2", "pol1"),  # hosts cursor was at C1; C3 is still blocked
        ("C1", "VM1", "pol2"),  # C1's VM cursor was at VM2 -> VM1; VM1's policy cursor at pol1
        ("C2", "VM1", "pol2"),  # C2-VM1's policy cursor was at pol1
        ("C1", "VM2", "pol2"),
        ("C2", "VM2", "pol2"),
        ("C1", "VM1", "pol1"),
        ("C2", "VM1", "pol1"),
        ("C1", "VM2", "pol1"),
    ]
    assert rr.held("C3") == 4
    assert rr.clear_items() == ["x"] * 4
    assert len(rr) == 0


def test_counters() -> None:
    rr = design_rr(2)
    assert len(rr) == 24 and rr.ready_keys() == 12 and rr.ready_hosts() == 3
    assert rr.held("C1") == 8 and rr.held("C1", "VM2") == 4
    assert rr.held("unknown") == 0 and rr.held("C1", "unknown") == 0
    rr.set_vm_blocked("C1", "VM1", True)
    rr.set_vm_available("C1", "VM2", False)
    assert rr.ready_hosts() == 2 and rr.ready_keys() == 12


# --- cost independent of idle keys -----------------------------------------------------------


def test_pick_cost_independent_of_idle_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    rr: NestedRoundRobin[int] = NestedRoundRobin()
    # 50,000 keys pushed and popped (empty, idle) ...
    for h in range(50):
        for v in range(100):
            for p in range(10):
                rr.push(f"idle{h}", f"v{v}", f"p{p}", 0)
    assert len(drain(rr)) == 50_000
    # ... 50,000 keys holding items under blocked VMs ...
    for h in range(50):
        for v in range(100):
            rr.set_vm_blocked(f"blk{h}", f"v{v}", True)
            for p in range(10):
                rr.push(f"blk{h}", f"v{v}", f"p{p}", 0)
    assert rr.ready_keys() == 50_000 and rr.ready_hosts() == 0
    # ... and 10 ready keys spread over existing idle hosts and a new one.
    ready = [("idle7", "v3", "p1"), ("idle7", "v3", "p9"), ("idle49", "v0", "p0")]
    ready += [("fresh", f"v{i}", "p") for i in range(7)]
    for k in ready:
        rr.push(*k, 1)
    assert rr.ready_hosts() == 3

    sizes: list[int] = []
    original_take = roundrobin._Ring.take

    def counting_take(self: roundrobin._Ring[Any]) -> Any:
        sizes.append(len(self))
        return original_take(self)

    monkeypatch.setattr(roundrobin._Ring, "take", counting_take)
    picks = drain(rr)
    assert sorted(keys(picks)) == sorted(ready)
    # Every pick is exactly one take() per level on a ring of READY children only
    # (never the 100 idle hosts, 100 VMs per host or 10 policies per VM).
    assert len(sizes) == 3 * 10 + 1  # +1: the final take() on the empty hosts ring
    assert max(sizes) <= 7
    assert sizes[-1] == 0


# --- property test against a naive reference model -------------------------------------------


class RefNode:
    def __init__(self, name: str, ordinal: int) -> None:
        self.name = name
        self.ordinal = ordinal
        self.children: list[RefNode] = []  # order of first appearance
        self.items: deque[int] = deque()
        self.cursor = -1  # ordinal of the child last served

    def child(self, name: str) -> RefNode | None:
        return next((c for c in self.children if c.name == name), None)


class Reference:
    """Literal semantics: scan children in order of first appearance, starting after the cursor."""

    def __init__(self) -> None:
        self.root = RefNode("", -1)
        self.ordinals = itertools.count()
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

    def push(self, h: str, v: str, p: str, item: int) -> None:
        self._get(self._get(self._get(self.root, h), v), p).items.append(item)

    def can_give_policy(self, p: RefNode) -> bool:
        return bool(p.items)

    def can_give_vm(self, h: RefNode, v: RefNode) -> bool:
        key = (h.name, v.name)
        if key in self.vm_off or key in self.vm_blk:
            return False
        return any(self.can_give_policy(p) for p in v.children)

    def can_give_host(self, h: RefNode) -> bool:
        if h.name in self.host_off or h.name in self.host_blk:
            return False
        return any(self.can_give_vm(h, v) for v in h.children)

    @staticmethod
    def scan(node: RefNode, can_give: Callable[[RefNode], bool]) -> RefNode | None:
        after = [c for c in node.children if c.ordinal > node.cursor]
        before = [c for c in node.children if c.ordinal <= node.cursor]
        for c in after + before:
            if can_give(c):
                node.cursor = c.ordinal
                return c
        return None

    def next(self) -> tuple[str, str, str, int] | None:
        h = self.scan(self.root, self.can_give_host)
        if h is None:
            return None
        v = self.scan(h, lambda v: self.can_give_vm(h, v))
        assert v is not None
        p = self.scan(v, self.can_give_policy)
        assert p is not None
        return h.name, v.name, p.name, p.items.popleft()

    def remove_vm(self, h: str, v: str) -> list[int]:
        host = self.root.child(h)
        vm = host.child(v) if host else None
        if host is None or vm is None:
            return []
        host.children.remove(vm)
        return [i for p in vm.children for i in p.items]

    def remove_key(self, h: str, v: str, p: str) -> list[int]:
        """The key goes, and its VM and host once they have no child left."""
        host = self.root.child(h)
        vm = host.child(v) if host else None
        pol = vm.child(p) if vm else None
        if host is None or vm is None or pol is None:
            return []
        vm.children.remove(pol)
        if not vm.children:
            host.children.remove(vm)
            if not host.children:
                self.root.children.remove(host)
        return list(pol.items)

    def clear_items(self) -> list[int]:
        out: list[int] = []
        for p in self.all_policies():
            out.extend(p.items)
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
        return sum(1 for h in self.root.children if self.can_give_host(h))


def _toggle(flags: set[Any], key: Any, on: bool) -> None:
    if on:
        flags.add(key)
    else:
        flags.discard(key)


@pytest.mark.parametrize("seed", range(25))
def test_matches_reference_model(seed: int) -> None:
    rnd = random.Random(seed)
    hosts = rnd.sample(["h0", "h1", "h2", "h3", "h4"], k=rnd.randint(1, 5))
    vms = rnd.sample(["v0", "v1", "v2", "v3"], k=rnd.randint(1, 4))
    pols = rnd.sample(["p0", "p1", "p2"], k=rnd.randint(1, 3))
    rr: NestedRoundRobin[int] = NestedRoundRobin()
    ref = Reference()
    counter = itertools.count()
    weights = {
        "push": 30,
        "next": 30,
        "host_av": 3,
        "host_blk": 3,
        "vm_av": 4,
        "vm_blk": 8,
        "remove": 1,
        "remove_key": 2,
        "clear": 0.3,
    }
    ops, w = list(weights), list(weights.values())
    for step in range(1500):
        op = rnd.choices(ops, w)[0]
        h, v = rnd.choice(hosts), rnd.choice(vms)
        flag = rnd.random() < 0.5
        if op == "push":
            item = next(counter)
            p = rnd.choice(pols)
            rr.push(h, v, p, item)
            ref.push(h, v, p, item)
        elif op == "next":
            assert rr.next() == ref.next(), f"seed={seed} step={step}"
        elif op == "host_av":
            rr.set_host_available(h, flag)
            _toggle(ref.host_off, h, not flag)
        elif op == "host_blk":
            rr.set_host_blocked(h, flag)
            _toggle(ref.host_blk, h, flag)
        elif op == "vm_av":
            rr.set_vm_available(h, v, flag)
            _toggle(ref.vm_off, (h, v), not flag)
        elif op == "vm_blk":
            rr.set_vm_blocked(h, v, flag)
            _toggle(ref.vm_blk, (h, v), flag)
        elif op == "remove":
            assert rr.remove_vm(h, v) == ref.remove_vm(h, v)
        elif op == "remove_key":
            p = rnd.choice(pols)
            assert rr.remove_key(h, v, p) == ref.remove_key(h, v, p), f"seed={seed} step={step}"
        else:
            assert rr.clear_items() == ref.clear_items()
        assert len(rr) == len(ref)
        assert rr.ready_keys() == ref.ready_keys()
        assert rr.ready_hosts() == ref.ready_hosts()
        assert rr.held(h) == ref.held(h)
        assert rr.held(h, v) == ref.held(h, v)
    # Finally lift every flag and drain both completely.
    for h in hosts:
        rr.set_host_available(h, True)
        rr.set_host_blocked(h, False)
        for v in vms:
            rr.set_vm_available(h, v, True)
            rr.set_vm_blocked(h, v, False)
    ref.host_off.clear()
    ref.host_blk.clear()
    ref.vm_off.clear()
    ref.vm_blk.clear()
    expected = []
    while (got := ref.next()) is not None:
        expected.append(got)
    assert drain(rr) == expected
    assert len(rr) == 0


@pytest.mark.parametrize(
    "setter",
    [
        pytest.param(lambda rr, off: rr.set_host_available("h", not off), id="host-unavailable"),
        pytest.param(lambda rr, off: rr.set_host_blocked("h", off), id="host-blocked"),
        pytest.param(lambda rr, off: rr.set_vm_available("h", "v", not off), id="vm-unavail"),
        pytest.param(lambda rr, off: rr.set_vm_blocked("h", "v", off), id="vm-blocked"),
    ],
)
def test_flag_setters_are_idempotent(setter: Callable[[NestedRoundRobin[str], bool], None]) -> None:
    rr: NestedRoundRobin[str] = NestedRoundRobin()
    rr.push("h", "v", "p", "a")
    rr.push("h", "v", "p", "b")
    setter(rr, False)  # already so: nothing changes
    assert rr.ready_hosts() == 1
    setter(rr, True)
    setter(rr, True)
    assert rr.next() is None
    setter(rr, False)  # once is enough to undo both
    assert [item for *_, item in drain(rr)] == ["a", "b"]
