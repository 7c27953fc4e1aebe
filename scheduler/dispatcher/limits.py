"""Limits an operator names, pure (docs/design.md §5.3): at most N actions of one kind in
flight at once, and a disruption budget per VM group (at most N of the group's VMs with
an action in flight at once).

:class:`NamedLimits` is the configuration; :class:`NamedCounts` keeps what is in flight
per action and per group, says which of these limits would hold a head
(:meth:`NamedCounts.holds`), and keeps the index of the keys waiting on each: a key held
by a limit is blocked in the round-robin (skipped, keeping its place) and recorded under
every limit that holds it; when one of them frees a slot, exactly the keys waiting on it
and on nothing else come back (:meth:`NamedCounts.finish`). A key's head is checked again
when it comes up in the rotation, so a limit full again by then blocks it again.

A dispatcher shard counts only its own hosts' events; the other shards' use of each limit
is given to it (:meth:`NamedCounts.set_external`, from the ledger every round), and a
limit is full when its own use and theirs together reach it. The shards' sum is kept by
the ledger, which refuses to mark what would pass a limit (:mod:`shared.named_budget`):
the external use makes the gate rarely propose what the ledger refuses, and a refused
head waits on the limit that refused it (:meth:`NamedCounts.wait`) until a finish, a
change of the external use or of the limits frees it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

KeyT = tuple[str, str, str]
VmT = tuple[str, str]


@dataclass(frozen=True)
class NamedLimits:
    """At most ``actions[a]`` actions ``a`` in flight (an action not named: no limit); at
    most ``groups[g]`` VMs of group ``g`` in action, ``default_group`` for a group not
    named (0: no budget)."""

    actions: Mapping[str, int] = field(default_factory=dict)
    groups: Mapping[str, int] = field(default_factory=dict)
    default_group: int = 0

    def action_limit(self, action: str) -> int:
        """0: no limit."""
        return self.actions.get(action, 0)

    def group_budget(self, group: str) -> int:
        """0: no budget."""
        return self.groups.get(group, self.default_group)

    @property
    def any(self) -> bool:
        """Whether any limit is set at all (else the dispatcher skips every check)."""
        return bool(self.actions) or bool(self.groups) or self.default_group > 0


@dataclass(frozen=True)
class Hold:
    """One limit at its capacity, holding a head: ``action live_migrate`` or ``group web``."""

    kind: Literal["action", "group"]
    name: str


class NamedCounts:
    """In-flight counts per action and per group, and the keys each full limit holds."""

    def __init__(self, limits: NamedLimits | None = None) -> None:
        self.limits = limits if limits is not None else NamedLimits()
        self._actions: Counter[str] = Counter()
        #: a VM's actions in flight and the group they count against (that of its first)
        self._vms: dict[VmT, tuple[int, str | None]] = {}
        self._groups: Counter[str] = Counter()  # VMs in action per group
        self._waiting: dict[Hold, set[KeyT]] = {}
        self._held_by: dict[KeyT, set[Hold]] = {}
        #: the other dispatcher shards' use of each limit (none: a single dispatcher)
        self._external: dict[Hold, int] = {}

    # -- counts --------------------------------------------------------------------
    def start(self, vm: VmT, action: str, group: str | None) -> None:
        """An action of ``vm`` is in flight (picked, or restored from the ledger)."""
        self._actions[action] += 1
        n, counted = self._vms.get(vm, (0, group))
        if n == 0 and counted is not None:
            self._groups[counted] += 1
        self._vms[vm] = (n + 1, counted)

    def finish(self, vm: VmT, action: str) -> list[KeyT]:
        """An action of ``vm`` ended; returns the keys no limit holds any more."""
        freed: list[Hold] = []
        self._actions[action] -= 1
        if self._actions[action] <= 0:
            del self._actions[action]
        freed.append(Hold("action", action))
        n, group = self._vms.pop(vm, (1, None))
        if n > 1:
            self._vms[vm] = (n - 1, group)
        elif group is not None:
            self._groups[group] -= 1
            if self._groups[group] <= 0:
                del self._groups[group]
            freed.append(Hold("group", group))
        return self._release(h for h in freed if not self._full(h))

    def in_action(self, vm: VmT) -> bool:
        return vm in self._vms

    # -- holding heads -------------------------------------------------------------
    def holds(self, vm: VmT, action: str, group: str | None) -> list[Hold]:
        """The limits that hold a head of ``vm`` for ``action`` now: its action's at its
        limit; its group's at its budget, unless the VM is in action already (counted)."""
        out: list[Hold] = []
        if self._full(Hold("action", action)):
            out.append(Hold("action", action))
        if group is not None and vm not in self._vms and self._full(Hold("group", group)):
            out.append(Hold("group", group))
        return out

    def wait(self, key: KeyT, holds: list[Hold]) -> None:
        """The key's head is held by ``holds`` (not empty): index it under each."""
        self._held_by.setdefault(key, set()).update(holds)
        for hold in holds:
            self._waiting.setdefault(hold, set()).add(key)

    def forget(self, key: KeyT) -> bool:
        """The key's head is gone or changed: drop it from the index; True if it was in."""
        holds = self._held_by.pop(key, None)
        for hold in holds or ():
            keys = self._waiting.get(hold)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._waiting[hold]
        return holds is not None

    def waiting(self) -> list[KeyT]:
        """Every key a limit holds."""
        return list(self._held_by)

    def held_by(self, key: KeyT) -> list[Hold]:
        """The limits holding the key (empty: none)."""
        return sorted(self._held_by.get(key, ()), key=lambda h: (h.kind, h.name))

    def set_limits(self, limits: NamedLimits) -> list[KeyT]:
        """New limits, live; returns the keys no limit holds any more."""
        self.limits = limits
        return self._release([h for h in self._waiting if not self._full(h)])

    def set_external(self, counts: Mapping[Hold, int]) -> list[KeyT]:
        """The other dispatcher shards' use of each limit now (a limit not in ``counts``:
        none), replacing the last; returns the keys no limit holds any more — those
        waiting on a limit whose external use fell enough, and any waiting on a limit
        not full at all (a head the ledger refused, whose refusal this use explains no
        more: it is checked again in its turn)."""
        self._external = {hold: n for hold, n in counts.items() if n > 0}
        return self._release([h for h in self._waiting if not self._full(h)])

    def waits_on_external(self) -> bool:
        """Whether a key waits on a limit the other shards' use takes part in."""
        return any(hold in self._external for hold in self._waiting)

    def own(self, hold: Hold) -> int:
        """This dispatcher's own use of the limit (the external not counted)."""
        if hold.kind == "action":
            return self._actions.get(hold.name, 0)
        return self._groups.get(hold.name, 0)

    def external(self, hold: Hold) -> int:
        """The other shards' use of the limit, as last given."""
        return self._external.get(hold, 0)

    def _full(self, hold: Hold) -> bool:
        if hold.kind == "action":
            limit = self.limits.action_limit(hold.name)
        else:
            limit = self.limits.group_budget(hold.name)
        return limit > 0 and self.own(hold) + self.external(hold) >= limit

    def _release(self, holds: Any) -> list[KeyT]:
        out: list[KeyT] = []
        for hold in list(holds):
            for key in self._waiting.pop(hold, ()):
                left = self._held_by[key]
                left.discard(hold)
                if not left:
                    del self._held_by[key]
                    out.append(key)
        return out

    # -- views ---------------------------------------------------------------------
    def usage(self, hold: Hold) -> tuple[int, int]:
        """The limit's use and its value: actions of the kind in flight, or VMs of the
        group in action (other shards' included), against the limit or budget."""
        used = self.own(hold) + self.external(hold)
        if hold.kind == "action":
            return used, self.limits.action_limit(hold.name)
        return used, self.limits.group_budget(hold.name)

    def describe(self, hold: Hold) -> str:
        """``action limit live_migrate 2/2``, ``group web budget 1/1``; with other
        shards' use, ``... 2/2 (1 on other shards)``."""
        used, limit = self.usage(hold)
        if hold.kind == "action":
            text = f"action limit {hold.name} {used}/{limit}"
        else:
            text = f"group {hold.name} budget {used}/{limit}"
        if external := self.external(hold):
            text += f" ({external} on other shards)"
        return text

    def view(self) -> dict[str, Any]:
        """Each named limit with its current use and the keys it holds; groups in action
        under the default budget too."""
        waiting = Counter({h: len(keys) for h, keys in self._waiting.items()})
        actions = {
            a: {
                "limit": limit,
                "in_flight": self._actions.get(a, 0),
                "waiting": waiting[Hold("action", a)],
            }
            for a, limit in sorted(self.limits.actions.items())
        }
        names = sorted(set(self.limits.groups) | set(self._groups))
        groups = {
            g: {
                "budget": self.limits.group_budget(g),
                "in_action": self._groups.get(g, 0),
                "waiting": waiting[Hold("group", g)],
            }
            for g in names
        }
        return {
            "actions": actions,
            "groups": groups,
            "default_group_budget": self.limits.default_group,
        }
