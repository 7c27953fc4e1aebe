"""Priority classes over the nested round-robin, pure (docs/design.md §5).

One :class:`~scheduler.dispatcher.roundrobin.NestedRoundRobin` per class in use (made on a
class's first event), all ranking hosts, VMs and policies by one shared order of first
appearance and all told the same availability and limit flags. A pick first chooses the
class, by credit:

- every class with ready work accrues its minimum share as credit; a class without ready
  work drops its credit to 0 (nothing is banked while idle, so its share is lent);
- the highest class whose credit reaches 1 is served, else the highest class with ready
  work; the class served pays 1 (never going below 0).

So the highest class with work goes first, and a class with work still gets at least its
share of the picks. Then the class's round-robin picks within it.

FIFO within a key holds across classes: the items a key holds form runs of one class
each; only the oldest run sits in its class's round-robin, the others wait behind it and
move in when it is spent. A key is therefore always served in the class of its oldest
held item.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Generic, TypeVar

from scheduler.dispatcher.roundrobin import NestedRoundRobin, Order, Weights
from shared.priority import ORDER, Priority

T = TypeVar("T")
F = TypeVar("F")
KeyT = tuple[str, str, str]

#: credit is counted in millionths of a pick: exact, whatever the shares' decimals
UNIT = 1_000_000


def validate_shares(shares: Mapping[Priority, float]) -> dict[Priority, float]:
    """Each share in [0, 1] and their sum at most 1; raises ValueError naming the bad one."""
    for cls, share in shares.items():
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"the minimum share of {cls.value} must be in [0, 1], not {share}")
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ValueError(f"the minimum shares add up to {sum(shares.values()):g}, more than 1")
    return dict(shares)


class _Runs(Generic[T]):
    """What one key holds: ``n`` items of class ``cls`` in that class's round-robin, and
    the later items (each with its class) behind them."""

    __slots__ = ("behind", "cls", "n")

    def __init__(self, cls: Priority) -> None:
        self.cls = cls
        self.n = 0
        self.behind: deque[tuple[Priority, T]] = deque()


class ClassScheduler(Generic[T]):
    """Picks across classes by credit, and within a class by weighted nested round-robin."""

    def __init__(
        self, min_shares: Mapping[Priority, float] | None = None, weights: Weights | None = None
    ) -> None:
        self._order = Order()
        self._weights = weights if weights is not None else Weights()
        self._rr: dict[Priority, NestedRoundRobin[T]] = {}
        self._shares: dict[Priority, int] = {}
        self.set_min_shares(min_shares or {})
        self._credit: dict[Priority, int] = dict.fromkeys(ORDER, 0)
        self._keys: dict[KeyT, _Runs[T]] = {}
        self._held_host: dict[str, int] = {}
        self._held_vm: dict[tuple[str, str], int] = {}
        self._len = 0
        self.served: dict[Priority, int] = dict.fromkeys(ORDER, 0)
        # the flags, kept here too, for a class's round-robin made after they were set
        self._host_unavailable: set[str] = set()
        self._host_blocked: set[str] = set()
        self._vm_unavailable: set[tuple[str, str]] = set()
        self._vm_blocked: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        return self._len

    # -- configuration -------------------------------------------------------------
    @property
    def min_shares(self) -> dict[Priority, float]:
        return {cls: units / UNIT for cls, units in self._shares.items() if units}

    def set_min_shares(self, shares: Mapping[Priority, float]) -> None:
        """Replace the minimum shares (a class not named has none); credit carries over."""
        valid = validate_shares(shares)
        self._shares = {cls: round(valid.get(cls, 0.0) * UNIT) for cls in ORDER}

    @property
    def weights(self) -> Weights:
        return self._weights

    def set_weights(self, weights: Weights) -> None:
        self._weights = weights
        for rr in self._rr.values():
            rr.set_weights(weights)

    # -- items in and out ----------------------------------------------------------
    def add_key(self, host: str, vm: str, policy: str) -> None:
        """Fix the key's place in the order (first appearance) without holding an item."""
        self._order.key(host, vm, policy)

    def hosts(self) -> list[str]:
        """Host names in order of first appearance."""
        return list(self._order.hosts)

    def push(
        self, host: str, vm: str, policy: str, cls: Priority, item: T, front: bool = False
    ) -> None:
        """Append item of class ``cls`` to the key's FIFO (``front``: put it back at its
        head)."""
        key = (host, vm, policy)
        runs = self._keys.get(key)
        if runs is None:
            runs = self._keys[key] = _Runs(cls)
            self._into(key, runs, cls, [item])
        elif front and runs.cls != cls:
            moved = self._class(runs.cls).take_key(host, vm, policy)
            runs.behind.extendleft((runs.cls, it) for it in reversed(moved))
            runs.cls, runs.n = cls, 0
            self._into(key, runs, cls, [item], front=True)
        elif front or (runs.cls == cls and not runs.behind):
            self._into(key, runs, cls, [item], front=front)
        else:
            runs.behind.append((cls, item))
        self._count(host, vm, 1)

    def next(self) -> tuple[str, str, str, T] | None:
        """Pop and return (host, vm, policy, item) of the class whose turn it is, or None."""
        cls = self._choose()
        if cls is None:
            return None
        got = self._rr[cls].next()
        assert got is not None, "class with a ready host gave nothing"
        host, vm, policy, _item = got
        key = (host, vm, policy)
        runs = self._keys[key]
        runs.n -= 1
        if runs.n == 0:
            if runs.behind:
                self._promote(key, runs)
            else:
                del self._keys[key]
        self._count(host, vm, -1)
        self.served[cls] += 1
        return got

    def _choose(self) -> Priority | None:
        """The class to serve now, by credit (see the module's docstring); pays for it."""
        ready = [cls for cls in ORDER if (rr := self._rr.get(cls)) is not None and rr.ready_hosts()]
        chosen: Priority | None = None
        for cls in ORDER:
            if cls not in ready:
                self._credit[cls] = 0
                continue
            self._credit[cls] += self._shares[cls]
        for cls in ready:
            if self._credit[cls] >= UNIT:
                chosen = cls
                break
        if chosen is None:
            if not ready:
                return None
            chosen = ready[0]
        self._credit[chosen] = max(0, self._credit[chosen] - UNIT)
        return chosen

    def _class(self, cls: Priority) -> NestedRoundRobin[T]:
        rr = self._rr.get(cls)
        if rr is None:
            rr = self._rr[cls] = NestedRoundRobin(self._weights, self._order)
            for host in self._host_unavailable:
                rr.set_host_available(host, False)
            for host in self._host_blocked:
                rr.set_host_blocked(host, True)
            for host, vm in self._vm_unavailable:
                rr.set_vm_available(host, vm, False)
            for host, vm in self._vm_blocked:
                rr.set_vm_blocked(host, vm, True)
        return rr

    def _into(
        self, key: KeyT, runs: _Runs[T], cls: Priority, items: list[T], front: bool = False
    ) -> None:
        rr = self._class(cls)
        for item in items:
            rr.push(*key, item, front=front)
        runs.n += len(items)

    def _promote(self, key: KeyT, runs: _Runs[T]) -> None:
        """The oldest run is spent: the next one moves into its class's round-robin."""
        cls = runs.behind[0][0]
        items: list[T] = []
        while runs.behind and runs.behind[0][0] == cls:
            items.append(runs.behind.popleft()[1])
        runs.cls = cls
        self._into(key, runs, cls, items)

    def _count(self, host: str, vm: str, n: int) -> None:
        self._len += n
        self._held_host[host] = self._held_host.get(host, 0) + n
        self._held_vm[(host, vm)] = self._held_vm.get((host, vm), 0) + n

    # -- flags: the same in every class ---------------------------------------------
    def set_host_available(self, host: str, available: bool) -> None:
        _toggle(self._host_unavailable, host, not available)
        for rr in self._rr.values():
            rr.set_host_available(host, available)

    def set_host_blocked(self, host: str, blocked: bool) -> None:
        _toggle(self._host_blocked, host, blocked)
        for rr in self._rr.values():
            rr.set_host_blocked(host, blocked)

    def set_vm_available(self, host: str, vm: str, available: bool) -> None:
        _toggle(self._vm_unavailable, (host, vm), not available)
        for rr in self._rr.values():
            rr.set_vm_available(host, vm, available)

    def set_vm_blocked(self, host: str, vm: str, blocked: bool) -> None:
        _toggle(self._vm_blocked, (host, vm), blocked)
        for rr in self._rr.values():
            rr.set_vm_blocked(host, vm, blocked)

    # -- removal ---------------------------------------------------------------------
    def remove_vm(self, host: str, vm: str) -> list[T]:
        """Drop the VM and its keys; return its items (policy order, FIFO)."""
        items: list[T] = []
        for policy in self._order.policies(host, vm):
            items.extend(self._take(host, vm, policy))
        for rr in self._rr.values():
            rr.remove_vm(host, vm)
        self._order.forget_vm(host, vm)
        if items:
            self._count(host, vm, -len(items))
        self._held_vm.pop((host, vm), None)
        return items

    def clear_items(self) -> list[T]:
        """Drop every held item, keeping keys, their order, cursors, credit and flags."""
        dropped: list[T] = []
        for host, hplace in self._order.hosts.items():
            for vm, vplace in hplace.children.items():
                for policy in vplace.children:
                    dropped.extend(self._take(host, vm, policy))
        self._keys.clear()
        self._held_host.clear()
        self._held_vm.clear()
        self._len = 0
        return dropped

    def _take(self, host: str, vm: str, policy: str) -> list[T]:
        runs = self._keys.pop((host, vm, policy), None)
        if runs is None:
            return []
        return self._rr[runs.cls].take_key(host, vm, policy) + [it for _, it in runs.behind]

    # -- views -----------------------------------------------------------------------
    def held(self, host: str, vm: str | None = None) -> int:
        """Number of items held under a host (or one of its VMs)."""
        if vm is None:
            return self._held_host.get(host, 0)
        return self._held_vm.get((host, vm), 0)

    def ready_hosts(self) -> int:
        """Number of hosts able to give in some class."""
        if len(self._rr) == 1:
            return next(iter(self._rr.values())).ready_hosts()
        return len(set().union(*(rr.ready_host_names() for rr in self._rr.values())))

    def ready_keys(self) -> int:
        """Number of keys holding at least one item."""
        return len(self._keys)

    def class_stats(self) -> dict[str, dict[str, float | int]]:
        """Per class: items held, keys it serves now, picks served since start, its
        minimum share and its credit (in picks)."""
        held: dict[Priority, int] = dict.fromkeys(ORDER, 0)
        keys: dict[Priority, int] = dict.fromkeys(ORDER, 0)
        for runs in self._keys.values():
            keys[runs.cls] += 1
            held[runs.cls] += runs.n
            for cls, _ in runs.behind:
                held[cls] += 1
        return {
            cls.value: {
                "held": held[cls],
                "keys": keys[cls],
                "served": self.served[cls],
                "min_share": self._shares[cls] / UNIT,
                "credit": self._credit[cls] / UNIT,
            }
            for cls in ORDER
        }


def _toggle(flags: set[F], key: F, on: bool) -> None:
    if on:
        flags.add(key)
    else:
        flags.discard(key)
