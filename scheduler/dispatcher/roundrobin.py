"""Nested round-robin over (host, vm, policy) FIFOs.

Three levels (hosts -> VMs -> policies). Every level keeps its children in order of first
appearance (a monotonically increasing ordinal, from an :class:`Order` that several
round-robins may share) and a ring holding only the children that can give right now, plus a
cursor (the ordinal last served). A pick serves the cursor's child again while it has picks
left of its weight and can still give (deficit round-robin: ``weight`` consecutive picks a
turn), else the first ready ordinal after the cursor, wrapping; so children that cannot give
are skipped without losing their place, all weights 1 is plain round-robin, and a pick costs
O(log ready) regardless of how many idle keys exist.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sortedcontainers import SortedList

T = TypeVar("T")


@dataclass(frozen=True)
class Weights:
    """Weights (integers >= 1) of hosts, VMs (by host and VM) and policies; 1 where none
    is given. A weight is the number of consecutive picks a child gets at its level while
    it can give, so under saturation each level's shares follow its weights."""

    hosts: Mapping[str, int] = field(default_factory=dict)
    vms: Mapping[tuple[str, str], int] = field(default_factory=dict)
    policies: Mapping[str, int] = field(default_factory=dict)

    def host(self, host: str) -> int:
        return self.hosts.get(host, 1)

    def vm(self, host: str, vm: str) -> int:
        return self.vms.get((host, vm), 1)

    def policy(self, policy: str) -> int:
        return self.policies.get(policy, 1)


class _Place:
    """A name's ordinal of first appearance, and its children's."""

    __slots__ = ("children", "ordinal")

    def __init__(self, ordinal: int) -> None:
        self.ordinal = ordinal
        self.children: dict[str, _Place] = {}


class Order:
    """Order of first appearance of hosts, VMs and policies: one ordinal each, increasing.
    Round-robins sharing one Order rank their children alike, whichever saw a child first;
    a forgotten VM that comes back is a new appearance, after every other."""

    def __init__(self) -> None:
        self.hosts: dict[str, _Place] = {}
        self._next = 0

    def _place(self, within: dict[str, _Place], name: str) -> _Place:
        place = within.get(name)
        if place is None:
            place = within[name] = _Place(self._next)
            self._next += 1
        return place

    def key(self, host: str, vm: str, policy: str) -> tuple[int, int, int]:
        """The ordinals of the host, its VM and the VM's policy, given on first sight."""
        h = self._place(self.hosts, host)
        v = self._place(h.children, vm)
        p = self._place(v.children, policy)
        return h.ordinal, v.ordinal, p.ordinal

    def vms(self, host: str) -> list[str]:
        """The host's VMs in order of first appearance."""
        h = self.hosts.get(host)
        return [] if h is None else list(h.children)

    def size(self, host: str) -> tuple[int, int]:
        """The host's VMs and keys."""
        h = self.hosts.get(host)
        if h is None:
            return 0, 0
        return len(h.children), sum(len(v.children) for v in h.children.values())

    def policies(self, host: str, vm: str) -> list[str]:
        """The VM's policies in order of first appearance."""
        h = self.hosts.get(host)
        v = h.children.get(vm) if h is not None else None
        return [] if v is None else list(v.children)

    def forget_vm(self, host: str, vm: str) -> None:
        h = self.hosts.get(host)
        if h is not None:
            h.children.pop(vm, None)

    def forget_key(self, host: str, vm: str, policy: str) -> None:
        """Forget a key, and its VM and host once they have no key left: each comes
        back as a new appearance."""
        h = self.hosts.get(host)
        v = h.children.get(vm) if h is not None else None
        if h is None or v is None:
            return
        v.children.pop(policy, None)
        if not v.children:
            del h.children[vm]
            if not h.children:
                del self.hosts[host]


class _Node:
    """A named child with its ordinal of first appearance and its weight."""

    __slots__ = ("name", "ordinal", "weight")

    def __init__(self, name: str, weight: int = 1) -> None:
        self.name = name
        self.ordinal = -1
        self.weight = weight


C = TypeVar("C", bound=_Node)
K = TypeVar("K")

#: a gate on a pick: (host, vm, policy, head) -> whether the head may go now
Gate = Callable[[str, str, str, T], bool]


class _Ring(Generic[C]):
    """Children in order of first appearance; the ready ones rotate behind a cursor."""

    __slots__ = ("_cursor", "_live", "_ready", "_served", "_turn", "children")

    def __init__(self) -> None:
        self.children: dict[str, C] = {}
        self._ready: SortedList[int] = SortedList()
        self._live: dict[int, C] = {}  # ready ordinal -> child
        self._cursor = -1  # ordinal last served
        self._turn: C | None = None  # the child last served
        self._served = 0  # its consecutive picks

    def __len__(self) -> int:
        return len(self._ready)

    def add(self, child: C, ordinal: int) -> C:
        """Add a new child (not ready) at its ordinal of first appearance."""
        child.ordinal = ordinal
        self.children[child.name] = child
        return child

    def ready(self) -> list[C]:
        """The children that can give now."""
        return list(self._live.values())

    def remove(self, name: str) -> C | None:
        """Forget a child entirely; a later add() is a new appearance."""
        child = self.children.pop(name, None)
        if child is not None:
            self.mark(child, False)
        return child

    def mark(self, child: C, ready: bool) -> None:
        """Put the child into, or take it out of, the rotation (idempotent)."""
        if ready and child.ordinal not in self._live:
            self._live[child.ordinal] = child
            self._ready.add(child.ordinal)
        elif not ready and child.ordinal in self._live:
            del self._live[child.ordinal]
            self._ready.remove(child.ordinal)

    def state(self) -> tuple[int, int, C | None]:
        """The rotation's place (cursor, picks of the turn, the turn), for :meth:`rewind`."""
        return self._cursor, self._served, self._turn

    def rewind(self, state: tuple[int, int, C | None]) -> None:
        """Undo :meth:`take`s since :meth:`state` gave ``state``."""
        self._cursor, self._served, self._turn = state

    def take(self) -> C | None:
        """Serve the cursor's child again if it is ready and has picks left of its weight;
        else the first ready child after the cursor (wrapping), moving the cursor to it."""
        if not self._ready:
            return None
        turn = self._turn
        if turn is not None and self._served < turn.weight and turn.ordinal in self._live:
            self._served += 1
            return turn
        i = self._ready.bisect_right(self._cursor)
        ordinal = self._ready[i if i < len(self._ready) else 0]
        self._cursor = ordinal
        self._served = 1
        turn = self._turn = self._live[ordinal]
        return turn


class _Policy(_Node, Generic[T]):
    __slots__ = ("items",)

    def __init__(self, name: str, weight: int = 1) -> None:
        super().__init__(name, weight)
        self.items: deque[T] = deque()


class _Vm(_Node, Generic[T]):
    __slots__ = ("held", "ring")

    def __init__(self, name: str, weight: int = 1) -> None:
        super().__init__(name, weight)
        self.ring: _Ring[_Policy[T]] = _Ring()
        self.held = 0


class _Host(_Node, Generic[T]):
    __slots__ = ("held", "ring")

    def __init__(self, name: str, weight: int = 1) -> None:
        super().__init__(name, weight)
        self.ring: _Ring[_Vm[T]] = _Ring()
        self.held = 0


class NestedRoundRobin(Generic[T]):
    """Fair picks across hosts, then each host's VMs, then each VM's policies.

    Availability/blocked flags live apart from the nodes: they may be set before a host/VM is
    first seen and they survive remove_vm() (a re-created VM gets them back). ``order`` may
    be shared with other round-robins (one per class: :mod:`scheduler.dispatcher.classes`),
    so all of them rank children alike.
    """

    def __init__(self, weights: Weights | None = None, order: Order | None = None) -> None:
        self._weights = weights if weights is not None else Weights()
        self._order = order if order is not None else Order()
        self._hosts: _Ring[_Host[T]] = _Ring()
        self._host_unavailable: set[str] = set()
        self._host_blocked: set[str] = set()
        self._vm_unavailable: set[tuple[str, str]] = set()
        self._vm_blocked: set[tuple[str, str]] = set()
        self._key_blocked: set[tuple[str, str, str]] = set()
        self._len = 0
        self._ready_keys = 0

    def __len__(self) -> int:
        return self._len

    def add_key(self, host: str, vm: str, policy: str) -> None:
        """Fix the key's place in the order (first appearance) without holding an item."""
        self._node(host, vm, policy)

    def hosts(self) -> list[str]:
        """Host names in order of first appearance."""
        return list(self._hosts.children)

    def _node(self, host: str, vm: str, policy: str) -> tuple[_Host[T], _Vm[T], _Policy[T]]:
        h = self._hosts.children.get(host)
        v = h.ring.children.get(vm) if h is not None else None
        p = v.ring.children.get(policy) if v is not None else None
        if p is not None:
            assert h is not None and v is not None
            return h, v, p
        ho, vo, po = self._order.key(host, vm, policy)
        w = self._weights
        if h is None:
            h = self._hosts.add(_Host(host, w.host(host)), ho)
        if v is None:
            v = h.ring.add(_Vm(vm, w.vm(host, vm)), vo)
        p = v.ring.add(_Policy(policy, w.policy(policy)), po)
        return h, v, p

    def set_weights(self, weights: Weights) -> None:
        """Apply new weights to every host, VM and policy, live."""
        self._weights = weights
        for h in self._hosts.children.values():
            h.weight = weights.host(h.name)
            for v in h.ring.children.values():
                v.weight = weights.vm(h.name, v.name)
                for p in v.ring.children.values():
                    p.weight = weights.policy(p.name)

    def push(self, host: str, vm: str, policy: str, item: T, front: bool = False) -> None:
        """Append item to the key's FIFO (``front``: put it back at its head), creating
        host/VM/policy on first appearance."""
        h, v, p = self._node(host, vm, policy)
        if front:
            p.items.appendleft(item)
        else:
            p.items.append(item)
        v.held += 1
        h.held += 1
        self._len += 1
        if len(p.items) == 1:
            self._ready_keys += 1
            if not self._key_blocked or (host, vm, policy) not in self._key_blocked:
                v.ring.mark(p, True)
                self._refresh(h, v)

    def next(self, gate: Gate[T] | None = None) -> tuple[str, str, str, T] | None:
        """Pop and return (host, vm, policy, item) in nested round-robin order, or None.

        ``gate``: a key whose head it refuses is blocked (:meth:`set_key_blocked`) as if
        it had been before this pick, which goes on to the next key in order."""
        while True:
            if gate is None:
                h = self._hosts.take()
                if h is None:
                    return None
                v = h.ring.take()
                assert v is not None, "ready host without a ready VM"
                p = v.ring.take()
                assert p is not None, "ready VM without a ready policy"
                break
            hs = self._hosts.state()
            h = self._hosts.take()
            if h is None:
                return None
            vs = h.ring.state()
            v = h.ring.take()
            assert v is not None, "ready host without a ready VM"
            ps = v.ring.state()
            p = v.ring.take()
            assert p is not None, "ready VM without a ready policy"
            if gate(h.name, v.name, p.name, p.items[0]):
                break
            self._hosts.rewind(hs)
            h.ring.rewind(vs)
            v.ring.rewind(ps)
            self._key_blocked.add((h.name, v.name, p.name))
            v.ring.mark(p, False)
            self._refresh(h, v)
        item = p.items.popleft()
        v.held -= 1
        h.held -= 1
        self._len -= 1
        if not p.items:
            self._ready_keys -= 1
            v.ring.mark(p, False)
            self._refresh(h, v)
        return h.name, v.name, p.name, item

    # The four flag setters are idempotent and cheap when nothing changes: readiness is
    # recomputed only when a flag flips (it is kept up to date on every other change).
    def set_host_available(self, host: str, available: bool) -> None:
        if toggle(self._host_unavailable, host, not available):
            self._refresh_named(host)

    def set_host_blocked(self, host: str, blocked: bool) -> None:
        if toggle(self._host_blocked, host, blocked):
            self._refresh_named(host)

    def set_vm_available(self, host: str, vm: str, available: bool) -> None:
        if toggle(self._vm_unavailable, (host, vm), not available):
            self._refresh_named(host, vm)

    def set_vm_blocked(self, host: str, vm: str, blocked: bool) -> None:
        if toggle(self._vm_blocked, (host, vm), blocked):
            self._refresh_named(host, vm)

    def set_key_blocked(self, host: str, vm: str, policy: str, blocked: bool) -> None:
        """A key blocked keeps its items and its place but is skipped (its head waits on
        a limit of the dispatcher's); the flag survives the key's emptying."""
        if not toggle(self._key_blocked, (host, vm, policy), blocked):
            return
        h = self._hosts.children.get(host)
        v = h.ring.children.get(vm) if h is not None else None
        p = v.ring.children.get(policy) if v is not None else None
        if h is not None and v is not None and p is not None:
            v.ring.mark(p, not blocked and len(p.items) > 0)
            self._refresh(h, v)

    def key_blocked(self, host: str, vm: str, policy: str) -> bool:
        return (host, vm, policy) in self._key_blocked

    def key_len(self, host: str, vm: str, policy: str) -> int:
        """Number of items the key holds."""
        h = self._hosts.children.get(host)
        v = h.ring.children.get(vm) if h is not None else None
        p = v.ring.children.get(policy) if v is not None else None
        return 0 if p is None else len(p.items)

    def key_items(self, host: str, vm: str, policy: str) -> Sequence[T]:
        """The items the key holds, FIFO (a view: do not change it)."""
        h = self._hosts.children.get(host)
        v = h.ring.children.get(vm) if h is not None else None
        p = v.ring.children.get(policy) if v is not None else None
        return () if p is None else p.items

    def take_key(self, host: str, vm: str, policy: str) -> list[T]:
        """Take every item out of one key (FIFO), keeping the key and its place."""
        h = self._hosts.children.get(host)
        v = h.ring.children.get(vm) if h is not None else None
        p = v.ring.children.get(policy) if v is not None else None
        if h is None or v is None or p is None or not p.items:
            return []
        items = list(p.items)
        p.items.clear()
        v.held -= len(items)
        h.held -= len(items)
        self._len -= len(items)
        self._ready_keys -= 1
        v.ring.mark(p, False)
        self._refresh(h, v)
        return items

    def remove_vm(self, host: str, vm: str) -> list[T]:
        """Drop the VM and its keys from the rotation (and from the order: a re-created VM
        is a new appearance); return its items (policy order, FIFO)."""
        self._order.forget_vm(host, vm)
        h = self._hosts.children.get(host)
        v = h.ring.remove(vm) if h is not None else None
        if h is None or v is None:
            return []
        items = [item for p in v.ring.children.values() for item in p.items]
        self._ready_keys -= sum(1 for p in v.ring.children.values() if p.items)
        h.held -= v.held
        self._len -= v.held
        self._refresh(h)
        return items

    def remove_key(self, host: str, vm: str, policy: str) -> list[T]:
        """Drop one key from the rotation and the order, and its VM and host once they
        have no key left (their flags stay); return its items (FIFO)."""
        self._order.forget_key(host, vm, policy)
        self._key_blocked.discard((host, vm, policy))
        h = self._hosts.children.get(host)
        v = h.ring.children.get(vm) if h is not None else None
        p = v.ring.remove(policy) if v is not None else None
        if h is None or v is None or p is None:
            return []
        items = list(p.items)
        if items:
            self._ready_keys -= 1
            v.held -= len(items)
            h.held -= len(items)
            self._len -= len(items)
        if not v.ring.children:
            h.ring.remove(vm)
        else:
            self._refresh(h, v)
        if not h.ring.children:
            self._hosts.remove(host)
        else:
            self._refresh(h)
        return items

    def clear_items(self) -> list[T]:
        """Drop every held item, keeping keys, their order, cursors and flags."""
        dropped: list[T] = []
        for h in self._hosts.children.values():
            for v in h.ring.children.values():
                for p in v.ring.children.values():
                    dropped.extend(p.items)
                    p.items.clear()
                    v.ring.mark(p, False)
                v.held = 0
                h.ring.mark(v, False)
            h.held = 0
            self._hosts.mark(h, False)
        self._len = 0
        self._ready_keys = 0
        return dropped

    def held(self, host: str, vm: str | None = None) -> int:
        """Number of items held under a host (or one of its VMs)."""
        h = self._hosts.children.get(host)
        if h is None or vm is None:
            return 0 if h is None else h.held
        v = h.ring.children.get(vm)
        return 0 if v is None else v.held

    def ready_hosts(self) -> int:
        """Number of hosts currently able to give."""
        return len(self._hosts)

    def ready_host_names(self) -> set[str]:
        """The hosts currently able to give."""
        return {h.name for h in self._hosts.ready()}

    def ready_keys(self) -> int:
        """Number of (host, vm, policy) keys holding at least one item."""
        return self._ready_keys

    def _refresh_named(self, host: str, vm: str | None = None) -> None:
        h = self._hosts.children.get(host)
        if h is None:
            return
        v = h.ring.children.get(vm) if vm is not None else None
        if vm is None or v is not None:
            self._refresh(h, v)

    def _refresh(self, h: _Host[T], v: _Vm[T] | None = None) -> None:
        """Recompute readiness of v (if given) within h, then of h within the hosts."""
        if v is not None:
            key = (h.name, v.name)
            ok = key not in self._vm_unavailable and key not in self._vm_blocked
            h.ring.mark(v, ok and len(v.ring) > 0)
        ok = h.name not in self._host_unavailable and h.name not in self._host_blocked
        self._hosts.mark(h, ok and len(h.ring) > 0)


def toggle(flags: set[K], key: K, on: bool) -> bool:
    """Set or clear a flag; True if that changed it."""
    if (key in flags) == on:
        return False
    if on:
        flags.add(key)
    else:
        flags.discard(key)
    return True
