"""The Dispatcher and its lock behind one thread-safe facade.

Two threads share the dispatcher: the AMQP loop (every change of held and in-flight
events) and the admin API (views, pause, limits). Each method here is one operation, done
under the lock; nothing else touches the :class:`~scheduler.dispatcher.dispatcher.Dispatcher`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, replace
from typing import Any, Generic

from scheduler.dispatcher.board import Backlog, Query, board
from scheduler.dispatcher.dispatcher import Classes, Dispatcher, H, Held, Known
from scheduler.dispatcher.idle import KeyT
from scheduler.dispatcher.limits import Hold, NamedLimits
from scheduler.dispatcher.roundrobin import Weights
from shared.models import MappingSnapshot, VmEventMessage
from shared.priority import Priority
from shared.waiting import Waiting

#: an event counted in flight: (id, host, vm), or (id, host, vm, action, group)
Restored = tuple[str, str, str] | tuple[str, str, str, str, str | None]


class DispatcherState(Generic[H]):
    def __init__(self, dispatcher: Dispatcher[H]) -> None:
        """Takes ``dispatcher`` over: use it only through this object from now on."""
        self._dispatcher = dispatcher
        self._lock = threading.Lock()

    # -- heads in, picks out (the loop) --------------------------------------------
    def knows(self, event_id: str) -> Known:
        with self._lock:
            return self._dispatcher.knows(event_id)

    def offer(self, event: VmEventMessage, handle: H) -> bool:
        """Hold a head; False for a duplicate (the id is held or in flight already)."""
        with self._lock:
            return self._dispatcher.offer(event, handle)

    def replace_stale(self, event: VmEventMessage, handle: H) -> bool:
        """Drop a stale in-flight count of the event (picked, never handed over) and hold
        this delivery instead; False if it is still refused."""
        with self._lock:
            self._dispatcher.abort(event.id)
            return self._dispatcher.offer(event, handle)

    def pick_batch(self, size: int, clock: Callable[[], float]) -> list[Held[H]]:
        """Up to ``size`` picks, each counted in flight and logged at ``clock()``."""
        picks: list[Held[H]] = []
        with self._lock:
            while len(picks) < size:
                held = self._dispatcher.pick(clock())
                if held is None:
                    break
                picks.append(held)
        return picks

    def take_duplicates(self) -> list[Held[H]]:
        """Held copies of events counted in flight meanwhile: to be acked, not sent."""
        with self._lock:
            return self._dispatcher.take_duplicates()

    def abort(self, event_ids: Iterable[str]) -> None:
        """Undo picks whose tasks were never sent."""
        with self._lock:
            for event_id in event_ids:
                self._dispatcher.abort(event_id)

    def give_back(self, picks: Iterable[Held[H]]) -> None:
        """Undo picks that never left (the ledger failed): held again, first in line."""
        with self._lock:
            for held in reversed(list(picks)):
                self._dispatcher.give_back(held)

    def refuse(self, refused: Iterable[tuple[Held[H], Hold]]) -> None:
        """Undo picks the ledger refused to mark, each for the named limit full across
        the shards: held again, first in line, each key waiting on its limit."""
        with self._lock:
            for held, hold in reversed(list(refused)):
                self._dispatcher.refuse(held, hold)

    def set_global_named(self, use: Mapping[Hold, int]) -> None:
        """The named limits' use across every dispatcher shard (the ledger's, counted
        just now): what is not this shard's own is the others' (never below 0: own
        events finished in the ledger and not yet here), counted with its own against
        the limits until the next call."""
        with self._lock:
            named = self._dispatcher.named
            others = {hold: n - named.own(hold) for hold, n in use.items()}
            self._dispatcher.set_external_named({h: n for h, n in others.items() if n > 0})

    def waits_on_other_shards(self) -> bool:
        """Whether a head waits on a named limit the other shards' use takes part in."""
        with self._lock:
            return self._dispatcher.named.waits_on_external()

    def named_config(self) -> NamedLimits:
        """The action limits and group budgets in force."""
        with self._lock:
            return self._dispatcher.named.limits

    def complete(self, event_ids: Iterable[str]) -> None:
        """Actions finished: free their slots (unknown ids are ignored)."""
        with self._lock:
            for event_id in event_ids:
                self._dispatcher.complete(event_id)

    def restore(self, in_flight: Iterable[Restored]) -> None:
        """Count ``(event id, host, vm[, action, group])`` found in flight in the ledger
        (with action and group: against the named limits too)."""
        with self._lock:
            for row in in_flight:
                self._dispatcher.restore(*row)

    def in_flight_ids(self) -> list[str]:
        with self._lock:
            return list(self._dispatcher.in_flight)

    def in_flight_count(self) -> int:
        with self._lock:
            return len(self._dispatcher.in_flight)

    def drop_held(self) -> list[Held[H]]:
        """The deliveries are void (connection lost): forget every held head."""
        with self._lock:
            return self._dispatcher.drop_held()

    def start_afresh(self) -> None:
        """Forget every key and head, keeping the limits, classes, weights, pause,
        dispatch log and events in flight (a shard between sessions: its partitions may
        have changed, and the next session restores what it serves from the ledger; the
        events of a partition it gave up stay counted until they end)."""
        with self._lock:
            self._dispatcher = self._dispatcher.fresh()

    def demand(self) -> int:
        """Hosts with work, ready or in flight (a shard's demand)."""
        with self._lock:
            return self._dispatcher.demand()

    # -- the mapping (the loop) ----------------------------------------------------
    def load_mapping(self, snapshot: MappingSnapshot, now: float | None = None) -> None:
        """Availability of every host and VM, and every key in mapping order (each
        counted as used at ``now``, when given)."""
        with self._lock:
            for host, hview in snapshot.hosts.items():
                self._dispatcher.set_host_available(host, hview.available)
                for vm, vview in hview.vms.items():
                    self._dispatcher.set_vm_available(host, vm, vview.available)
                    for policy in vview.policies:
                        self._dispatcher.add_key(host, vm, policy, now)

    def add_key(self, host: str, vm: str, policy: str, now: float | None = None) -> None:
        with self._lock:
            self._dispatcher.add_key(host, vm, policy, now)

    def idle_keys(self, now: float, idle_for: float, limit: int) -> list[KeyT]:
        """Keys unused for ``idle_for`` seconds, with no work: candidates to retire."""
        with self._lock:
            return self._dispatcher.idle_keys(now, idle_for, limit)

    def retire_keys(self, keys: list[KeyT]) -> list[Held[H]]:
        """Forget keys that left the mapping; returns the heads they held, if any."""
        with self._lock:
            return self._dispatcher.retire_keys(keys)

    def keep_keys(self, keys: list[KeyT], now: float) -> None:
        """Candidates that stay: their idle time starts again at ``now``."""
        with self._lock:
            self._dispatcher.keep_keys(keys, now)

    def holds(self, key: KeyT) -> bool:
        """Whether the key holds a head."""
        with self._lock:
            return self._dispatcher.rr.holds(*key)

    def set_host_available(self, host: str, available: bool) -> None:
        with self._lock:
            self._dispatcher.set_host_available(host, available)

    def set_vm_available(self, host: str, vm: str, available: bool) -> None:
        with self._lock:
            self._dispatcher.set_vm_available(host, vm, available)

    def remove_vm(self, host: str, vm: str) -> list[Held[H]]:
        """Forget the VM's keys; returns its held heads (its in-flight ones stay counted)."""
        with self._lock:
            return self._dispatcher.remove_vm(host, vm)

    # -- control and views (the admin API) -----------------------------------------
    def pause(self) -> None:
        with self._lock:
            self._dispatcher.paused = True

    def resume(self) -> None:
        with self._lock:
            self._dispatcher.paused = False

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._dispatcher.paused

    def set_limits(self, changes: Mapping[str, int]) -> dict[str, int]:
        """Change some of the limits live; returns all of them."""
        with self._lock:
            limits = replace(self._dispatcher.limits, **changes)
            self._dispatcher.set_limits(limits)
        return asdict(limits)

    def named_limits(self) -> dict[str, Any]:
        """The action limits and group budgets, each with its use and the keys it holds."""
        with self._lock:
            return self._dispatcher.named.view()

    def set_named_limits(
        self,
        actions: Mapping[str, int] | None = None,
        groups: Mapping[str, int] | None = None,
        default_group: int | None = None,
    ) -> dict[str, Any]:
        """Replace the action limits and/or group budgets (each given table whole) and/or
        the default budget; returns them with their use."""
        with self._lock:
            now = self._dispatcher.named.limits
            self._dispatcher.set_named_limits(
                NamedLimits(
                    actions=dict(now.actions if actions is None else actions),
                    groups=dict(now.groups if groups is None else groups),
                    default_group=now.default_group if default_group is None else default_group,
                )
            )
            return self._dispatcher.named.view()

    def limit_holds(self, host: str, vm: str, policy: str) -> list[str]:
        """Which action limit or group budget holds the key's head (empty: none)."""
        with self._lock:
            return self._dispatcher.limit_holds(host, vm, policy)

    def classes(self) -> dict[str, Any]:
        """The policies' classes and each class's share, credit and work."""
        with self._lock:
            return self._dispatcher.class_view()

    def set_classes(
        self,
        policies: Mapping[str, Priority] | None = None,
        min_shares: Mapping[Priority, float] | None = None,
    ) -> dict[str, Any]:
        """Replace the policy classes and/or the minimum shares (each given table whole);
        raises ValueError, changing nothing, for shares that do not fit."""
        with self._lock:
            now = self._dispatcher.classes
            self._dispatcher.set_classes(
                Classes(
                    policies=dict(now.policies if policies is None else policies),
                    min_shares=dict(now.min_shares if min_shares is None else min_shares),
                )
            )
            return self._dispatcher.class_view()

    def weights(self) -> Weights:
        with self._lock:
            return self._dispatcher.weights

    def set_weights(
        self,
        hosts: Mapping[str, int] | None = None,
        vms: Mapping[tuple[str, str], int] | None = None,
        policies: Mapping[str, int] | None = None,
    ) -> Weights:
        """Replace some of the weight tables (each given one whole); returns them all."""
        with self._lock:
            now = self._dispatcher.weights
            new = Weights(
                hosts=dict(now.hosts if hosts is None else hosts),
                vms=dict(now.vms if vms is None else vms),
                policies=dict(now.policies if policies is None else policies),
            )
            self._dispatcher.set_weights(new)
            return new

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._dispatcher.stats()

    def why(self, event_id: str) -> tuple[Known, Waiting | None]:
        """What the dispatcher knows of the event, and what holds it if it is held."""
        with self._lock:
            return self._dispatcher.knows(event_id), self._dispatcher.why(event_id)

    def board(self, backlog: Backlog, now: float, query: Query) -> dict[str, Any]:
        """The operator's board (:mod:`scheduler.dispatcher.board`)."""
        with self._lock:
            return board(self._dispatcher, backlog, now, query)

    def limits_use(self) -> dict[str, Any]:
        with self._lock:
            return self._dispatcher.limits_use()

    def recent_dispatches(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            return self._dispatcher.recent_dispatches(limit)
