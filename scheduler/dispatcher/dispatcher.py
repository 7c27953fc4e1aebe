"""The dispatcher's decisions, pure: which held event goes next, within which limits.

No I/O and no clock: the adapter (:mod:`scheduler.dispatcher.handover`, through the
thread-safe :mod:`scheduler.dispatcher.state`) hands in events, completions and the time, and
carries out what comes back. ``H`` is the adapter's handle of a delivery.

Whether a VM or host is blocked (at its limit) is kept once, in the round-robin; this module
keeps the counts that decide it. Held heads are served by class, then by weighted nested
round-robin (:mod:`scheduler.dispatcher.classes`); the limits hold across classes.

The limits an operator names (per action, per VM group: :mod:`scheduler.dispatcher.limits`)
hold a key rather than a VM or host: a head whose action or group is at its limit blocks
its key, checked when the key comes up in the rotation, and its key is unblocked when
that limit frees a slot. With none set, no head is checked.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from itertools import islice
from typing import Any, Generic, TypeVar

from scheduler.dispatcher import waiting
from scheduler.dispatcher.classes import ClassScheduler
from scheduler.dispatcher.idle import IdleKeys, KeyT
from scheduler.dispatcher.limits import Hold, NamedCounts, NamedLimits
from scheduler.dispatcher.roundrobin import Weights
from shared.models import VmEventMessage
from shared.priority import DEFAULT, ORDER, Priority
from shared.waiting import Waiting

H = TypeVar("H")


@dataclass(frozen=True)
class Limits:
    """No defaults of its own: the service builds it from its settings."""

    max_parallel: int
    per_vm: int
    per_host: int  # 0 = no per-host limit


@dataclass(frozen=True)
class Classes:
    """The class of each policy's events that name none (else :data:`DEFAULT`), and each
    class's minimum share of the picks while it has ready work."""

    policies: Mapping[str, Priority] = field(default_factory=dict)
    min_shares: Mapping[Priority, float] = field(default_factory=dict)


class Known(Enum):
    """What the dispatcher knows of an event id."""

    NEW = "new"  # neither held nor in flight
    HELD = "held"  # a delivery of it is held, not yet picked
    IN_FLIGHT = "in_flight"  # counted in flight (picked, or restored from the ledger)


@dataclass(frozen=True)
class Held(Generic[H]):
    event: VmEventMessage
    handle: H


@dataclass(frozen=True)
class Dispatch:
    event_id: str
    host: str
    vm: str
    policy: str
    action: str
    at: float
    priority: str  # the class it was served in


class Dispatcher(Generic[H]):
    def __init__(
        self,
        limits: Limits,
        paused: bool = False,
        log_size: int = 10000,
        classes: Classes | None = None,
        weights: Weights | None = None,
        named: NamedLimits | None = None,
    ) -> None:
        self.limits = limits
        self.paused = paused
        self.classes = classes if classes is not None else Classes()
        self.rr: ClassScheduler[Held[H]] = ClassScheduler(self.classes.min_shares, weights)
        self.in_flight: dict[str, tuple[str, str]] = {}  # event id -> (host, vm)
        #: each VM's events in flight, in the order they started (its count: the length)
        self._on_vm: dict[tuple[str, str], dict[str, None]] = {}
        #: event id -> (action, group) of what in_flight holds; action None: not known
        self._kinds: dict[str, tuple[str | None, str | None]] = {}
        self.named = NamedCounts(named)
        self._per_host: Counter[str] = Counter()
        self.dispatches: deque[Dispatch] = deque(maxlen=log_size)
        #: the dispatch log's count of each class
        self._logged: Counter[str] = Counter()
        self.dispatched_total = 0
        self.completed_total = 0
        self._held: dict[str, VmEventMessage] = {}  # held heads by id
        self._duplicates: list[Held[H]] = []  # held copies of events counted in flight
        #: the keys by last use, for retiring those idle (:mod:`scheduler.dispatcher.idle`)
        self.idle = IdleKeys()

    # -- inputs --------------------------------------------------------------------
    def add_key(self, host: str, vm: str, policy: str, now: float | None = None) -> None:
        """Fix a key's place in the rotation (mapping order) before any event arrives;
        with ``now``, it counts as used then (else only from its first dispatch)."""
        self.rr.add_key(host, vm, policy)
        if now is not None:
            self.idle.used((host, vm, policy), now)

    def knows(self, event_id: str) -> Known:
        """In flight wins over held: restore() may count an id a delivery of which is held."""
        if event_id in self.in_flight:
            return Known.IN_FLIGHT
        return Known.HELD if event_id in self._held else Known.NEW

    def offer(self, event: VmEventMessage, handle: H) -> bool:
        """Hold the head of a key queue. False if that event id is already held or in
        flight: a duplicate message, which the caller acks without dispatching (the
        message already held or dispatched carries the event)."""
        if event.id in self.in_flight or event.id in self._held:
            return False
        self._held[event.id] = event
        self.rr.push(event.host, event.vm, event.policy, self.class_of(event), Held(event, handle))
        return True

    def class_of(self, event: VmEventMessage) -> Priority:
        """The event's own class, else its policy's, else the default."""
        return event.priority or self.classes.policies.get(event.policy, DEFAULT)

    def pick(self, now: float) -> Held[H] | None:
        """The next event to dispatch, counted in flight at once; None if paused, at the
        global limit, or nothing can go. A held copy of an event counted in flight
        meanwhile (:meth:`restore`) is not a dispatch: it goes to
        :meth:`take_duplicates`, and the pick goes on."""
        gate = self._gate if self.named.limits.any else None
        while not self.paused and len(self.in_flight) < self.limits.max_parallel:
            got = self.rr.next(gate)
            if got is None:
                return None
            host, vm, policy, held = got
            self._held.pop(held.event.id, None)
            if held.event.id in self.in_flight:
                self._duplicates.append(held)
                continue
            return self._dispatch(held, host, vm, policy, now)
        return None

    def _gate(self, host: str, vm: str, policy: str, held: Held[H]) -> bool:
        """Whether a key's head may go now as far as the named limits go; if not, the
        key is indexed under the limits that hold it (the round-robin blocks it)."""
        e = held.event
        if e.id in self.in_flight:
            return True  # a held copy of an event in flight: let it out, to be acked
        holds = self.named.holds((host, vm), e.action.value, e.group)
        if holds:
            self.named.wait((host, vm, policy), holds)
        return not holds

    def limit_holds(self, host: str, vm: str, policy: str) -> list[str]:
        """What holds the key's head among the named limits, as an operator reads it:
        ``action limit live_migrate 2/2``, ``group web budget 1/1``; empty if nothing."""
        return [self.named.describe(h) for h in self.named.held_by((host, vm, policy))]

    def take_duplicates(self) -> list[Held[H]]:
        """Held copies of events that were counted in flight while held: the caller acks
        them (the event is carried by another delivery)."""
        out, self._duplicates = self._duplicates, []
        return out

    def _dispatch(self, held: Held[H], host: str, vm: str, policy: str, now: float) -> Held[H]:
        self._start(held.event.id, host, vm, held.event.action.value, held.event.group)
        self.idle.used((host, vm, policy), now)
        cls = self.rr.last or self.class_of(held.event)
        if len(self.dispatches) == self.dispatches.maxlen:
            self._logged[self.dispatches[0].priority] -= 1
        self.dispatches.append(
            Dispatch(held.event.id, host, vm, policy, held.event.action, now, cls.value)
        )
        self._logged[cls.value] += 1
        self.dispatched_total += 1
        return held

    def abort(self, event_id: str) -> None:
        """Undo a pick whose task was never sent (duplicate, or the broker went away):
        free its slots and take it out of the dispatch log."""
        if self.complete(event_id, count=False):
            self.dispatched_total -= 1
            for i in range(len(self.dispatches) - 1, -1, -1):
                if self.dispatches[i].event_id == event_id:
                    self._logged[self.dispatches[i].priority] -= 1
                    del self.dispatches[i]
                    break

    def give_back(self, held: Held[H]) -> None:
        """Undo a pick whose handover failed before anything left (the ledger was
        unreachable): hold it again at the head of its key, to be picked again."""
        self.abort(held.event.id)
        e = held.event
        self._held[e.id] = e
        self.rr.push(e.host, e.vm, e.policy, self.class_of(e), held, front=True)
        self._unblock([(e.host, e.vm, e.policy)])  # a new head: checked when its turn comes

    def refuse(self, held: Held[H], hold: Hold) -> None:
        """Undo a pick the ledger refused to mark because a named limit is full across
        the dispatcher shards (:mod:`shared.named_budget`): held again at the head of its
        key, which waits on ``hold`` as one the gate holds does — until that limit frees
        a slot here, the other shards' use of it changes (:meth:`set_external_named`) or
        the limits do — so a refused head is not proposed again at once."""
        self.give_back(held)
        e = held.event
        key = (e.host, e.vm, e.policy)
        self.named.wait(key, [hold])
        self.rr.set_key_blocked(*key, True)

    def set_external_named(self, counts: Mapping[Hold, int]) -> None:
        """The other dispatcher shards' use of the named limits now: counted with this
        one's against them (:meth:`NamedCounts.set_external`); keys it no longer holds go
        again."""
        self._unblock(self.named.set_external(counts), known=True)

    def complete(self, event_id: str, count: bool = True) -> bool:
        """An action finished: free its slots. False if it was not in flight."""
        where = self.in_flight.pop(event_id, None)
        if where is None:
            return False
        host, vm = where
        on_vm = self._on_vm.get(where, {})
        on_vm.pop(event_id, None)
        action, _ = self._kinds.pop(event_id)
        if action is not None:
            self._unblock(self.named.finish(where, action), known=True)
        self._per_host[host] -= 1
        if not on_vm:
            self._on_vm.pop(where, None)
        if self._per_host[host] <= 0:
            del self._per_host[host]
        self._refresh(host, vm)
        if count:
            self.completed_total += 1
        return True

    def restore(
        self,
        event_id: str,
        host: str,
        vm: str,
        action: str | None = None,
        group: str | None = None,
    ) -> None:
        """Count an event found in flight in the ledger (after a restart or reconnect),
        against its action's limit and its group's budget too when they are given."""
        if event_id not in self.in_flight:
            self._start(event_id, host, vm, action, group)

    def set_named_limits(self, named: NamedLimits) -> None:
        """Apply new action limits and group budgets live: keys held only by limits no
        longer full go again; a limit now full holds heads from their next turn."""
        self._unblock(self.named.set_limits(named), known=True)

    def set_limits(self, limits: Limits) -> None:
        """Apply new limits live. Only a VM or host with actions in flight can be blocked,
        so refreshing those is enough to block and unblock correctly."""
        self.limits = limits
        for host, vm in list(self._on_vm):
            self._refresh(host, vm)
        for host in list(self._per_host):
            self._refresh_host(host)

    def set_classes(self, classes: Classes) -> None:
        """New policy classes (for heads offered from now on) and minimum shares, live."""
        self.rr.set_min_shares(classes.min_shares)
        self.classes = classes

    @property
    def weights(self) -> Weights:
        return self.rr.weights

    def set_weights(self, weights: Weights) -> None:
        self.rr.set_weights(weights)

    def set_host_available(self, host: str, available: bool) -> None:
        self.rr.set_host_available(host, available)

    def set_vm_available(self, host: str, vm: str, available: bool) -> None:
        self.rr.set_vm_available(host, vm, available)

    def idle_keys(self, now: float, idle_for: float, limit: int) -> list[KeyT]:
        """Up to ``limit`` keys unused for ``idle_for`` seconds that hold no event and
        whose VM has none in flight: to be retired (:meth:`retire_keys`)."""
        return self.idle.due(now, idle_for, limit, self._busy)

    def _busy(self, key: KeyT) -> bool:
        return key[:2] in self._on_vm or self.rr.holds(*key)

    def retire_keys(self, keys: list[KeyT]) -> list[Held[H]]:
        """Forget keys that left the mapping (and VMs and hosts left without one);
        returns any heads they hold (their in-flight events stay counted)."""
        waiting = set(self.named.waiting())
        self._unblock([k for k in keys if k in waiting])
        out: list[Held[H]] = []
        for key in keys:
            self.idle.forget(key)
            out.extend(self.rr.remove_key(*key))
        for held in out:
            self._held.pop(held.event.id, None)
        return out

    def keep_keys(self, keys: list[KeyT], now: float) -> None:
        """Keys that stay (they had work after all): each counts as used at ``now``."""
        for key in keys:
            self.idle.used(key, now)

    def remove_vm(self, host: str, vm: str) -> list[Held[H]]:
        self._unblock([k for k in self.named.waiting() if k[0] == host and k[1] == vm])
        for policy in self.rr.policies(host, vm):
            self.idle.forget((host, vm, policy))
        held = self.rr.remove_vm(host, vm)
        for h in held:
            self._held.pop(h.event.id, None)
        return held

    def fresh(self) -> Dispatcher[H]:
        """A dispatcher that knows nothing of keys or heads, with this one's limits,
        classes, weights, pause and dispatch log — and its events in flight, still
        counted: what a shard starts a session with, its partitions changed
        (:mod:`scheduler.dispatcher.tenure`). Those of a partition it gave up still run,
        and the shard that took it counts them only once it has: until they end (their
        completions reach every shard) they count against this shard's slots too, so that
        the shards' counts never leave a running event out. It knows nothing of the other
        shards' use of the named limits: the ledger refuses what they fill until the
        next count."""
        new: Dispatcher[H] = Dispatcher(
            self.limits,
            self.paused,
            self.dispatches.maxlen or 0,
            self.classes,
            self.rr.weights,
            self.named.limits,
        )
        new.dispatches.extend(self.dispatches)
        new._logged.update(self._logged)
        new.dispatched_total = self.dispatched_total
        new.completed_total = self.completed_total
        for event_id, (host, vm) in self.in_flight.items():
            action, group = self._kinds[event_id]
            new.restore(event_id, host, vm, action, group)
        return new

    def demand(self) -> int:
        """Hosts with work: a head ready to go, or an action in flight — a shard's
        demand, by which the shards split the global limit."""
        return len(self.rr.ready_host_names() | self._per_host.keys())

    def drop_held(self) -> list[Held[H]]:
        """The deliveries are void (connection lost): forget every held head."""
        self._held.clear()
        self._unblock(self.named.waiting())
        return [*self.take_duplicates(), *self.rr.clear_items()]

    # -- internals -----------------------------------------------------------------
    def _start(
        self, event_id: str, host: str, vm: str, action: str | None, group: str | None
    ) -> None:
        self.in_flight[event_id] = (host, vm)
        self._on_vm.setdefault((host, vm), {})[event_id] = None
        self._kinds[event_id] = (action, group)
        if action is not None:
            self.named.start((host, vm), action, group)
        self._per_host[host] += 1
        self._refresh(host, vm)

    def _unblock(self, keys: list[tuple[str, str, str]], known: bool = False) -> None:
        """Unblock keys in the round-robin (``known``: the named limits dropped them
        from their index already)."""
        for key in keys:
            if known or self.named.forget(key):
                self.rr.set_key_blocked(*key, False)

    def _refresh(self, host: str, vm: str) -> None:
        """Tell the round-robin whether this VM and its host may give now (it keeps the
        flags; setting one unchanged costs a set lookup)."""
        self.rr.set_vm_blocked(host, vm, len(self._on_vm.get((host, vm), ())) >= self.limits.per_vm)
        self._refresh_host(host)

    def _refresh_host(self, host: str) -> None:
        limit = self.limits.per_host
        self.rr.set_host_blocked(host, limit > 0 and self._per_host.get(host, 0) >= limit)

    # -- views ---------------------------------------------------------------------
    def why(self, event_id: str) -> Waiting | None:
        """What holds the held head ``event_id`` (:mod:`scheduler.dispatcher.waiting`);
        None if it is not held here."""
        event = self._held.get(event_id)
        return None if event is None else waiting.why(self, event)

    def on_vm(self, host: str, vm: str) -> list[str]:
        """The VM's events in flight, oldest first."""
        return list(self._on_vm.get((host, vm), ()))

    def host_in_flight(self, host: str) -> int:
        return self._per_host.get(host, 0)

    def limits_use(self) -> dict[str, Any]:
        """Each limit and its current use: the global one's slots in flight, and the
        busiest VM's and host's (O(actions in flight))."""
        busiest_vm = max(self._on_vm.items(), key=lambda kv: len(kv[1]), default=None)
        busiest_host = max(self._per_host.items(), key=lambda kv: kv[1], default=None)
        named = self.named.view()
        return {
            "max_parallel": {"limit": self.limits.max_parallel, "in_use": len(self.in_flight)},
            "per_vm": {
                "limit": self.limits.per_vm,
                "max_in_use": len(busiest_vm[1]) if busiest_vm else 0,
                "busiest": "/".join(busiest_vm[0]) if busiest_vm else None,
                "at_limit": sum(len(on) >= self.limits.per_vm for on in self._on_vm.values()),
            },
            "per_host": {
                "limit": self.limits.per_host,
                "max_in_use": busiest_host[1] if busiest_host else 0,
                "busiest": busiest_host[0] if busiest_host else None,
                "at_limit": sum(n >= self.limits.per_host > 0 for n in self._per_host.values()),
            },
            # the named limits: each with its use and the keys it holds
            "per_action": named["actions"],
            "per_group": named["groups"],
        }

    def recent_shares(self) -> dict[str, Any]:
        """Per class: dispatches in the dispatch log (the last DISPATCH_LOG_SIZE) and
        their share of it."""
        total = len(self.dispatches)
        return {
            "window": total,
            "classes": {
                cls.value: {
                    "dispatched": self._logged[cls.value],
                    "share": self._logged[cls.value] / total if total else 0.0,
                }
                for cls in ORDER
            },
        }

    def stats(self) -> dict[str, Any]:
        hosts: dict[str, dict[str, int]] = {}
        for host in self.rr.hosts():
            hosts[host] = {"in_flight": self._per_host.get(host, 0), "held": self.rr.held(host)}
        return {
            "limits": asdict(self.limits),
            "paused": self.paused,
            "in_flight": len(self.in_flight),
            "held": len(self.rr),
            "ready_keys": self.rr.ready_keys(),
            "ready_hosts": self.rr.ready_hosts(),
            "dispatched_total": self.dispatched_total,
            "completed_total": self.completed_total,
            "hosts": hosts,
            "limits_use": self.limits_use(),
            "named_limits": self.named.view(),
        }

    def class_view(self) -> dict[str, Any]:
        """The policies' classes and, per class, its share, credit and what it holds,
        and what it was dispatched over the dispatch log (``window`` dispatches)."""
        classes = self.rr.class_stats()
        recent = self.recent_shares()
        for name, view in classes.items():
            view.update(recent["classes"][name])
        return {
            "policies": {p: c.value for p, c in self.classes.policies.items()},
            "classes": classes,
            "window": recent["window"],
        }

    def recent_dispatches(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` dispatches, oldest first."""
        items = list(islice(reversed(self.dispatches), max(limit, 0)))
        return [asdict(d) for d in reversed(items)]
