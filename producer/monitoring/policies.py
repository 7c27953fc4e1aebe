"""The monitoring policies: changes and time in, the events to raise out. Pure: the
runner passes the clock in and does the raising.

Every event id is derived from the change that caused it (and never from when it was
seen), so a restart, whose :meth:`Policies.start` finds the same state again, or a relist
that reports the same change again, asks for the same ids, which the ledger accepts once.
A new occurrence (a new outage, a new maintenance, another scaling) comes with a new
version, hence a new id; and a restarted source, whose versions start again, has another
incarnation (:attr:`Policies.incarnation`), which is part of every id.

- **auto-heal**: a VM DOWN for ``debounce`` seconds is healed; one back before that was
  a reboot or a flap (counted, not healed). A VM healed less than
  ``ignore_repeat_within`` ago that goes DOWN again is left alone (Masakari): healing a
  VM that keeps dying only hides the fault.
- **host maintenance**: every VM on a host entering MAINTENANCE is migrated off it.
- **autoscale**: the mean metric of a group's ACTIVE replicas against a band, within the
  group's min and max, then a cooldown after each scaling (out or in), so the first
  scaling's effect is measured before a second one is asked for.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from producer.monitoring.model import (
    Change,
    GroupRecord,
    HostState,
    HostStateChanged,
    Intent,
    UtilisationChanged,
    View,
    VmRecord,
    VmState,
    VmStateChanged,
    describe,
)
from producer.monitoring.rules import (
    AutoHealRule,
    AutoscaleRule,
    HostMaintenanceRule,
    PolicyFileError,
    Rules,
    load_rules,
    parse_rules,
)
from shared.models import Action
from shared.names import is_valid_name

__all__ = ["Policies", "PolicyFileError", "Rules", "event_id", "load_rules", "parse_rules"]

#: what makes a group scale: a change of one of its VMs
Trigger = VmStateChanged | UtilisationChanged


def event_id(source: str, policy: str, vm: str, action: Action, *evidence: object) -> str:
    key = "|".join([source, policy, vm, action.value, *map(str, evidence)])
    return "mon-" + sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Heal:
    due: float
    cause: VmStateChanged


class Policies:
    """One per monitored source. ``start`` once, then ``on_changes`` after each diff is
    applied to the view, ``tick`` when ``next_due`` comes, ``raised`` for each event the
    ledger accepted. The counters are plain ints for the runner to export."""

    def __init__(self, rules: Rules, source: str) -> None:
        self.rules = rules
        self.source = source
        #: the source's incarnation ("" for a source without one, whose versions never
        #: repeat: OpenStack's are times): part of every id, so the same version seen in a
        #: restarted source is another change
        self.incarnation = ""
        self.flaps_suppressed = 0
        self.repeats_ignored = 0
        #: intents dropped because a host, VM or group name is not a valid event name
        self.invalid = 0
        self._rules = {r.name: r for r in rules.policies}
        self._heal_rules = rules.auto_heal
        self._maintenance_rules = rules.host_maintenance
        self._scale_rules = rules.autoscale
        self._heals: dict[tuple[str, str], _Heal] = {}  # (policy, vm)
        self._timers: list[tuple[float, str, str]] = []  # (due, policy, vm); lazily pruned
        self._healed: dict[tuple[str, str], float] = {}  # (policy, vm) -> raised at
        self._cooldown: dict[str, float] = {}  # group -> until
        self._seen: dict[tuple[str, str], tuple[GroupRecord, int]] = {}  # (policy, group)
        self._asked: dict[tuple[str, str], str] = {}  # (policy, group) -> last id

    # -- the runner's calls --------------------------------------------------------
    def start(self, view: View, now: float) -> list[Intent]:
        """Act on the state as found (after a restart nothing says what changed)."""
        out: list[Intent] = []
        for heal in self._heal_rules:
            for r in view.vms.values():
                if r.state == VmState.DOWN:
                    at = view.since.get(r.vm, now)
                    self._down(
                        heal, VmStateChanged(r.vm, r.host, None, r.state, None, r.version, at)
                    )
        if self._maintenance_rules:
            on: dict[str, list[VmRecord]] = {}
            for r in view.vms.values():
                on.setdefault(r.host, []).append(r)
            for h in view.hosts.values():
                if h.state == HostState.MAINTENANCE and h.host in on:
                    cause = HostStateChanged(h.host, None, h.state, h.version, now)
                    for maintenance in self._maintenance_rules:
                        out += self._migrations(maintenance, cause, on[h.host])
        for scale in self._scale_rules:
            for group in view.groups:
                if scale.covers(group):
                    out += self._scale(scale, view, group, None, now)
        return out + self._due_heals(view, now)

    def on_changes(self, view: View, changes: Sequence[Change], now: float) -> list[Intent]:
        out: list[Intent] = []
        triggers: dict[str, Trigger] = {}  # group -> its latest member change
        for c in changes:
            if isinstance(c, VmStateChanged):
                for heal in self._heal_rules:
                    self._heal_change(heal, c)
                r = view.vms.get(c.vm)
                if r is not None and r.group is not None:
                    _keep_latest(triggers, r.group, c)
            elif isinstance(c, UtilisationChanged):
                if c.group is not None:
                    _keep_latest(triggers, c.group, c)
            elif c.new == HostState.MAINTENANCE and c.old != HostState.MAINTENANCE:
                vms = view.vms_on(c.host)
                for maintenance in self._maintenance_rules:
                    out += self._migrations(maintenance, c, vms)
        for scale in self._scale_rules:
            out += self._scale_changed(scale, view, triggers, now)
        return out

    def tick(self, view: View, now: float) -> list[Intent]:
        """Heals now due; groups whose cooldown ended are evaluated again (a group that
        stayed busy through the cooldown gets no new change to trigger it)."""
        out = self._due_heals(view, now)
        for group, until in list(self._cooldown.items()):
            if until <= now:
                del self._cooldown[group]
                for scale in self._scale_rules:
                    if scale.covers(group):
                        out += self._scale(scale, view, group, None, now)
        return out

    def next_due(self) -> float | None:
        while self._timers and not self._live(self._timers[0]):
            heapq.heappop(self._timers)
        dues = list(self._cooldown.values())
        if self._timers:
            dues.append(self._timers[0][0])
        return min(dues, default=None)

    def pending(self) -> int:
        """Timers running: heals waiting out their debounce, groups cooling down."""
        return len(self._heals) + len(self._cooldown)

    def raised(self, intent: Intent, now: float) -> None:
        rule = self._rules.get(intent.policy)
        if isinstance(rule, AutoHealRule) and rule.ignore_repeat_within > 0:
            self._healed[(rule.name, intent.vm)] = now
        elif isinstance(rule, AutoscaleRule) and rule.cooldown > 0:
            until = now + rule.cooldown
            self._cooldown[intent.vm] = max(until, self._cooldown.get(intent.vm, until))

    # -- auto-heal -------------------------------------------------------------------
    def _heal_change(self, rule: AutoHealRule, c: VmStateChanged) -> None:
        key = (rule.name, c.vm)
        if c.new == VmState.DOWN:
            if c.old != VmState.DOWN and key not in self._heals:
                self._down(rule, c)
            return
        if self._heals.pop(key, None) is not None:
            self.flaps_suppressed += 1
        if c.new is None:
            self._healed.pop(key, None)

    def _down(self, rule: AutoHealRule, c: VmStateChanged) -> None:
        key = (rule.name, c.vm)
        healed = self._healed.get(key)
        if healed is not None:
            if c.at - healed < rule.ignore_repeat_within:
                self.repeats_ignored += 1
                return
            del self._healed[key]
        due = c.at + rule.debounce
        self._heals[key] = _Heal(due, c)
        heapq.heappush(self._timers, (due, rule.name, c.vm))

    def _live(self, timer: tuple[float, str, str]) -> bool:
        heal = self._heals.get((timer[1], timer[2]))
        return heal is not None and heal.due == timer[0]

    def _due_heals(self, view: View, now: float) -> list[Intent]:
        out: list[Intent] = []
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)
            if not self._live(timer):
                continue
            _, policy, vm = timer
            heal = self._heals.pop((policy, vm))
            r = view.vms.get(vm)
            if r is None or r.state != VmState.DOWN:  # a change the runner did not pass on
                self.flaps_suppressed += 1
                continue
            action = Action.HEAL
            eid = self._id(policy, vm, action, heal.cause.version)
            intent = self._intent(eid, r.host, vm, policy, action, heal.cause, {})
            if intent is not None:
                out.append(intent)
        return out

    # -- host maintenance ------------------------------------------------------------
    def _migrations(
        self, rule: HostMaintenanceRule, cause: HostStateChanged, vms: Sequence[VmRecord]
    ) -> list[Intent]:
        out: list[Intent] = []
        action = rule.event_action
        for r in vms:
            eid = self._id(rule.name, r.vm, action, cause.host, cause.version)
            intent = self._intent(eid, cause.host, r.vm, rule.name, action, cause, {})
            if intent is not None:
                out.append(intent)
        return out

    # -- autoscale -------------------------------------------------------------------
    def _scale_changed(
        self, rule: AutoscaleRule, view: View, triggers: dict[str, Trigger], now: float
    ) -> list[Intent]:
        """Groups with a member's change, and groups whose bounds or membership changed
        (a VM gone or moved between groups: the updater reports no change of a group)."""
        todo: dict[str, Trigger | None] = {g: c for g, c in triggers.items() if rule.covers(g)}
        for group, record in view.groups.items():
            seen = self._seen.get((rule.name, group))
            if group not in todo and rule.covers(group) and seen != (record, _size(view, group)):
                todo[group] = None
        for key in [k for k in self._seen if k[0] == rule.name and k[1] not in view.groups]:
            del self._seen[key]
            self._asked.pop(key, None)
        out: list[Intent] = []
        for group, cause in todo.items():
            out += self._scale(rule, view, group, cause, now)
        return out

    def _scale(
        self, rule: AutoscaleRule, view: View, group: str, cause: Trigger | None, now: float
    ) -> list[Intent]:
        record = view.groups.get(group)
        if record is None:
            return []
        n = _size(view, group)
        self._seen[(rule.name, group)] = (record, n)
        if self._cooldown.get(group, -math.inf) > now:
            return []
        members = [r for m in view.members.get(group, ()) if (r := view.vms.get(m)) is not None]
        active = [
            r.cpu if rule.metric == "cpu" else r.ram for r in members if r.state == VmState.ACTIVE
        ]
        if not active:
            return []
        mean = math.fsum(active) / len(active)
        if mean >= rule.high and n < record.max:
            action = Action.SCALE_OUT
        elif mean <= rule.low and n > record.min:
            action = Action.SCALE_IN
        else:
            return []
        if cause is None:  # the latest member change stands for what the group shows
            r = max(members, key=lambda m: (m.version, m.vm))
            cause = UtilisationChanged(r.vm, r.host, group, r.cpu, r.ram, r.version, now)
        host = rule.groups_host
        eid = self._id(rule.name, group, action, host, n, cause.vm, cause.version)
        if self._asked.get((rule.name, group)) == eid:
            return []
        payload = {"group": group, "metric": rule.metric, "mean": round(mean, 4), "members": n}
        intent = self._intent(eid, host, group, rule.name, action, cause, payload)
        if intent is None:
            return []
        self._asked[(rule.name, group)] = eid
        return [intent]

    # -- building events -------------------------------------------------------------
    def _id(self, policy: str, vm: str, action: Action, *evidence: object) -> str:
        also = (self.incarnation,) if self.incarnation else ()
        return event_id(self.source, policy, vm, action, *evidence, *also)

    def _intent(
        self,
        eid: str,
        host: str,
        vm: str,
        policy: str,
        action: Action,
        cause: Change,
        extra: dict[str, Any],
    ) -> Intent | None:
        """``None`` (counted) if a name would make the event invalid: a cloud may name
        things the ledger refuses, and one such VM must not block the others."""
        if not (is_valid_name(host) and is_valid_name(vm) and is_valid_name(policy)):
            self.invalid += 1
            return None
        payload = {"cause": describe(cause), "source": self.source, **extra}
        return Intent(eid, host, vm, policy, action, cause, payload)


def _keep_latest(triggers: dict[str, Trigger], group: str, c: Trigger) -> None:
    """The group's latest change; of one VM record's two changes, its utilisation."""
    prev = triggers.get(group)
    rank = (c.version, isinstance(c, UtilisationChanged))
    if prev is None or rank >= (prev.version, isinstance(prev, UtilisationChanged)):
        triggers[group] = c


def _size(view: View, group: str) -> int:
    return len(view.members.get(group, ()))
