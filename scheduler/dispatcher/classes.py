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

from scheduler.dispatcher.roundrobin import Gate, NestedRoundRobin, Order, Weights, toggle
from shared.priority import ORDER, Priority

T = TypeVar("T")
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


class ClassScheduler(Generic[T]):
    """Picks across classes by credit, and within a class by weighted nested round-robin.

    A key's oldest run sits in its class's round-robin (its *home*); later runs of
    other classes wait in ``_behind``, which is empty unless some key holds runs of two
    classes at once, so the common path keeps no per-key state of its own."""

    def __init__(
        self, min_shares: Mapping[Priority, float] | None = None, weights: Weights | None = None
    ) -> None:
        self._order = Order()
        self._weights = weights if weights is not None else Weights()
        self._rr: dict[Priority, NestedRoundRobin[T]] = {}
        self._ordered: list[tuple[Priority, NestedRoundRobin[T]]] = []  # ORDER's order
        self._shares: dict[Priority, int] = {}
        self.set_min_shares(min_shares or {})
        self._credit: dict[Priority, int] = dict.fromkeys(ORDER, 0)
        self._behind: dict[KeyT, deque[tuple[Priority, T]]] = {}
        self._len = 0
        self.served: dict[Priority, int] = dict.fromkeys(ORDER, 0)
        #: the class of the last pick
        self.last: Priority | None = None
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

    def vms(self, host: str) -> list[str]:
        """The host's VMs in order of first appearance."""
        return self._order.vms(host)

    def size(self, host: str) -> tuple[int, int]:
        """The host's VMs and keys."""
        return self._order.size(host)

    def policies(self, host: str, vm: str) -> list[str]:
        """The VM's policies in order of first appearance."""
        return self._order.policies(host, vm)

    def push(
        self, host: str, vm: str, policy: str, cls: Priority, item: T, front: bool = False
    ) -> None:
        """Append item of class ``cls`` to the key's FIFO (``front``: put it back at its
        head)."""
        self._len += 1
        if len(self._ordered) == 1 and not self._behind and cls in self._rr:  # one class
            self._rr[cls].push(host, vm, policy, item, front=front)
            return
        key = (host, vm, policy)
        home = self._home(key)
        if home is None or (home == cls and (front or key not in self._behind)):
            self._class(cls).push(host, vm, policy, item, front=front)
        elif front:  # a give-back of another class: it goes first, the run behind it
            moved = self._rr[home].take_key(host, vm, policy)
            self._behind.setdefault(key, deque()).extendleft((home, it) for it in reversed(moved))
            self._class(cls).push(host, vm, policy, item)
        else:
            self._behind.setdefault(key, deque()).append((cls, item))

    def next(self, gate: Gate[T] | None = None) -> tuple[str, str, str, T] | None:
        """Pop and return (host, vm, policy, item) of the class whose turn it is, or None.

        ``gate``: a key whose head it refuses is blocked in its class's round-robin (see
        :meth:`NestedRoundRobin.next`); a class all of whose ready keys it refuses is
        not served, and the choice of class is made again as if it had had no work."""
        while True:
            credit = dict(self._credit) if gate is not None else self._credit
            cls = self._choose()
            if cls is None:
                return None
            rr = self._rr[cls]
            got = rr.next(gate)
            if got is not None:
                break
            assert gate is not None, "class with a ready host gave nothing"
            self._credit = credit
        if self._behind:
            key = (got[0], got[1], got[2])
            if key in self._behind and not rr.key_len(*key):
                self._promote(key)
        self._len -= 1
        self.served[cls] += 1
        self.last = cls
        return got

    def _choose(self) -> Priority | None:
        """The class to serve now, by credit (see the module's docstring); pays for it."""
        credit, shares = self._credit, self._shares
        chosen: Priority | None = None
        first: Priority | None = None
        for cls, rr in self._ordered:
            if not rr.ready_hosts():
                credit[cls] = 0
                continue
            c = credit[cls] = credit[cls] + shares[cls]
            if first is None:
                first = cls
            if chosen is None and c >= UNIT:
                chosen = cls
        if chosen is None:
            chosen = first
        if chosen is not None:
            c = credit[chosen]
            credit[chosen] = c - UNIT if c >= UNIT else 0
        return chosen

    def _home(self, key: KeyT) -> Priority | None:
        """The class whose round-robin holds the key's oldest items, if any."""
        for cls, rr in self._ordered:
            if rr.key_len(*key):
                return cls
        return None

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
            self._ordered = [(c, self._rr[c]) for c in ORDER if c in self._rr]
        return rr

    def _promote(self, key: KeyT) -> None:
        """The key's oldest run is spent: the next one moves into its class's round-robin."""
        behind = self._behind[key]
        cls = behind[0][0]
        rr = self._class(cls)
        while behind and behind[0][0] == cls:
            rr.push(*key, behind.popleft()[1])
        if not behind:
            del self._behind[key]

    # -- flags: the same in every class ---------------------------------------------
    def set_host_available(self, host: str, available: bool) -> None:
        if toggle(self._host_unavailable, host, not available):
            for rr in self._rr.values():
                rr.set_host_available(host, available)

    def set_host_blocked(self, host: str, blocked: bool) -> None:
        if toggle(self._host_blocked, host, blocked):
            for rr in self._rr.values():
                rr.set_host_blocked(host, blocked)

    def set_vm_available(self, host: str, vm: str, available: bool) -> None:
        if toggle(self._vm_unavailable, (host, vm), not available):
            for rr in self._rr.values():
                rr.set_vm_available(host, vm, available)

    def set_vm_blocked(self, host: str, vm: str, blocked: bool) -> None:
        if toggle(self._vm_blocked, (host, vm), blocked):
            for rr in self._rr.values():
                rr.set_vm_blocked(host, vm, blocked)

    def set_key_blocked(self, host: str, vm: str, policy: str, blocked: bool) -> None:
        """Block or unblock a key in every class (a pick's gate blocks it in its home)."""
        for rr in self._rr.values():
            rr.set_key_blocked(host, vm, policy, blocked)

    # -- removal ---------------------------------------------------------------------
    def remove_vm(self, host: str, vm: str) -> list[T]:
        """Drop the VM and its keys; return its items (policy order, FIFO)."""
        items: list[T] = []
        for policy in self._order.policies(host, vm):
            items.extend(self._take((host, vm, policy)))
        for rr in self._rr.values():
            rr.remove_vm(host, vm)
        self._order.forget_vm(host, vm)
        return items

    def remove_key(self, host: str, vm: str, policy: str) -> list[T]:
        """Drop one key (and its VM and host once empty); return its items (FIFO)."""
        items = self._take((host, vm, policy))
        for rr in self._rr.values():
            rr.remove_key(host, vm, policy)
        self._order.forget_key(host, vm, policy)
        return items

    def holds(self, host: str, vm: str, policy: str) -> bool:
        """Whether the key holds an item, in any class."""
        return self._home((host, vm, policy)) is not None

    def clear_items(self) -> list[T]:
        """Drop every held item, keeping keys, their order, cursors, credit and flags."""
        dropped: list[T] = []
        for host, hplace in self._order.hosts.items():
            for vm, vplace in hplace.children.items():
                for policy in vplace.children:
                    dropped.extend(self._take((host, vm, policy)))
        return dropped

    def _take(self, key: KeyT) -> list[T]:
        home = self._home(key)
        if home is None:
            return []
        items = self._rr[home].take_key(*key)
        items += [it for _, it in self._behind.pop(key, ())]
        self._len -= len(items)
        return items

    # -- views -----------------------------------------------------------------------
    def held(self, host: str, vm: str | None = None) -> int:
        """Number of items held under a host (or one of its VMs)."""
        n = sum(rr.held(host, vm) for rr in self._rr.values())
        for (h, v, _), behind in self._behind.items():
            if h == host and (vm is None or v == vm):
                n += len(behind)
        return n

    def ready_hosts(self) -> int:
        """Number of hosts able to give in some class."""
        if len(self._rr) == 1:
            return next(iter(self._rr.values())).ready_hosts()
        return len(set().union(*(rr.ready_host_names() for rr in self._rr.values())))

    def ready_host_names(self) -> set[str]:
        """The hosts able to give in some class."""
        return set().union(*(rr.ready_host_names() for rr in self._rr.values()))

    def ready_keys(self) -> int:
        """Number of keys holding at least one item."""
        return sum(rr.ready_keys() for rr in self._rr.values())

    # -- why a head waits (scheduler.dispatcher.waiting): each O(classes) --------------
    def host_available(self, host: str) -> bool:
        return host not in self._host_unavailable

    def vm_available(self, host: str, vm: str) -> bool:
        return (host, vm) not in self._vm_unavailable

    def key_items(self, host: str, vm: str, policy: str) -> list[T]:
        """The items the key holds, FIFO, whatever their classes."""
        key = (host, vm, policy)
        home = self._home(key)
        if home is None:
            return []
        return [*self._rr[home].key_items(*key), *(it for _, it in self._behind.get(key, ()))]

    def home(self, host: str, vm: str, policy: str) -> Priority | None:
        """The class the key is served in now (that of its oldest item), if it holds any."""
        return self._home((host, vm, policy))

    def waits_behind(self, cls: Priority) -> list[Priority]:
        """The higher classes with ready work that the next pick serves before ``cls``:
        none if ``cls``'s credit reaches a pick at the next choice."""
        if self._credit[cls] + self._shares[cls] >= UNIT:
            return []
        rank = ORDER.index(cls)
        return [c for c, rr in self._ordered if ORDER.index(c) < rank and rr.ready_hosts()]

    def class_states(self) -> dict[str, dict[str, float | int]]:
        """Per class, highest first: keys ready, minimum share and credit (in picks)."""
        return {
            cls.value: {
                "ready_keys": self._rr[cls].ready_keys() if cls in self._rr else 0,
                "min_share": self._shares[cls] / UNIT,
                "credit": self._credit[cls] / UNIT,
            }
            for cls in ORDER
        }

    def ready_in(self, cls: Priority) -> int:
        """Keys of class ``cls`` with a held head."""
        rr = self._rr.get(cls)
        return 0 if rr is None else rr.ready_keys()

    def class_stats(self) -> dict[str, dict[str, float | int]]:
        """Per class: items held, keys it serves now, picks served since start, its
        minimum share and its credit (in picks)."""
        held = {cls: len(rr) for cls, rr in self._rr.items()}
        for behind in self._behind.values():
            for cls, _ in behind:
                held[cls] = held.get(cls, 0) + 1
        return {
            cls.value: {
                "held": held.get(cls, 0),
                "keys": self._rr[cls].ready_keys() if cls in self._rr else 0,
                "served": self.served[cls],
                "min_share": self._shares[cls] / UNIT,
                "credit": self._credit[cls] / UNIT,
            }
            for cls in ORDER
        }
