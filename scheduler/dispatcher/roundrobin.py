"""Nested round-robin over (host, vm, policy) FIFOs.

Three levels (hosts -> VMs -> policies). Every level keeps its children in order of first
appearance (a monotonically increasing ordinal) and a ring holding only the children that can
give right now, plus a cursor (the ordinal last served). A pick takes the first ready ordinal
after the cursor, wrapping, so children that cannot give are skipped without losing their place,
and a pick costs O(log ready) regardless of how many idle keys exist.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from sortedcontainers import SortedList

T = TypeVar("T")


class _Node:
    """A named child with its ordinal of first appearance within its parent."""

    __slots__ = ("name", "ordinal")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ordinal = -1


C = TypeVar("C", bound=_Node)
K = TypeVar("K")


class _Ring(Generic[C]):
    """Children in order of first appearance; the ready ones rotate behind a cursor."""

    __slots__ = ("_cursor", "_live", "_next_ordinal", "_ready", "children")

    def __init__(self) -> None:
        self.children: dict[str, C] = {}
        self._ready: SortedList[int] = SortedList()
        self._live: dict[int, C] = {}  # ready ordinal -> child
        self._cursor = -1  # ordinal last served
        self._next_ordinal = 0

    def __len__(self) -> int:
        return len(self._ready)

    def add(self, child: C) -> C:
        """Append a new child (not ready) at the end of the order."""
        child.ordinal = self._next_ordinal
        self._next_ordinal += 1
        self.children[child.name] = child
        return child

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

    def take(self) -> C | None:
        """Serve the first ready child after the cursor (wrapping) and move the cursor to it."""
        if not self._ready:
            return None
        i = self._ready.bisect_right(self._cursor)
        ordinal = self._ready[i if i < len(self._ready) else 0]
        self._cursor = ordinal
        return self._live[ordinal]


class _Policy(_Node, Generic[T]):
    __slots__ = ("items",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.items: deque[T] = deque()


class _Vm(_Node, Generic[T]):
    __slots__ = ("held", "ring")

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ring: _Ring[_Policy[T]] = _Ring()
        self.held = 0


class _Host(_Node, Generic[T]):
    __slots__ = ("held", "ring")

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ring: _Ring[_Vm[T]] = _Ring()
        self.held = 0


class NestedRoundRobin(Generic[T]):
    """Fair picks across hosts, then each host's VMs, then each VM's policies.

    Availability/blocked flags live apart from the nodes: they may be set before a host/VM is
    first seen and they survive remove_vm() (a re-created VM gets them back).
    """

    def __init__(self) -> None:
        self._hosts: _Ring[_Host[T]] = _Ring()
        self._host_unavailable: set[str] = set()
        self._host_blocked: set[str] = set()
        self._vm_unavailable: set[tuple[str, str]] = set()
        self._vm_blocked: set[tuple[str, str]] = set()
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
        h = self._hosts.children.get(host) or self._hosts.add(_Host(host))
        v = h.ring.children.get(vm) or h.ring.add(_Vm(vm))
        p = v.ring.children.get(policy) or v.ring.add(_Policy(policy))
        return h, v, p

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
            v.ring.mark(p, True)
            self._refresh(h, v)

    def next(self) -> tuple[str, str, str, T] | None:
        """Pop and return (host, vm, policy, item) in nested round-robin order, or None."""
        h = self._hosts.take()
        if h is None:
            return None
        v = h.ring.take()
        assert v is not None, "ready host without a ready VM"
        p = v.ring.take()
        assert p is not None, "ready VM without a ready policy"
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
        if _toggle(self._host_unavailable, host, not available):
            self._refresh_named(host)

    def set_host_blocked(self, host: str, blocked: bool) -> None:
        if _toggle(self._host_blocked, host, blocked):
            self._refresh_named(host)

    def set_vm_available(self, host: str, vm: str, available: bool) -> None:
        if _toggle(self._vm_unavailable, (host, vm), not available):
            self._refresh_named(host, vm)

    def set_vm_blocked(self, host: str, vm: str, blocked: bool) -> None:
        if _toggle(self._vm_blocked, (host, vm), blocked):
            self._refresh_named(host, vm)

    def remove_vm(self, host: str, vm: str) -> list[T]:
        """Drop the VM and its keys from the rotation; return its items (policy order, FIFO)."""
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


def _toggle(flags: set[K], key: K, on: bool) -> bool:
    """Set or clear a flag; True if that changed it."""
    if (key in flags) == on:
        return False
    if on:
        flags.add(key)
    else:
        flags.discard(key)
    return True
