"""``kind: auto_heal``: a VM DOWN for ``debounce`` seconds is healed; one back before that
was a reboot or a flap (counted, not healed). A VM healed less than
``ignore_repeat_within`` ago that goes DOWN again is left alone (Masakari): healing a VM
that keeps dying only hides the fault."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field

from producer.monitoring.kind import PolicyConfig, PolicyContext, PolicyKind
from producer.monitoring.model import Change, Intent, View, VmState, VmStateChanged
from shared.models import Action
from shared.priority import Priority


class AutoHealConfig(PolicyConfig):
    kind: str = "auto_heal"
    #: seconds a VM must stay DOWN before it is healed: a reboot reports DOWN, then ACTIVE
    debounce: float = Field(15.0, ge=0)
    #: a VM healed less than this ago that goes DOWN again is left alone (0 = off)
    ignore_repeat_within: float = Field(180.0, ge=0)
    #: heals go before maintenance and scaling
    priority: Priority = Priority.URGENT


@dataclass(frozen=True)
class _Heal:
    due: float
    cause: VmStateChanged


class AutoHeal(PolicyKind[AutoHealConfig]):
    config_model = AutoHealConfig

    def __init__(self, config: AutoHealConfig, context: PolicyContext) -> None:
        super().__init__(config, context)
        self._heals: dict[str, _Heal] = {}  # vm -> the heal waiting out its debounce
        self._timers: list[tuple[float, str]] = []  # (due, vm); lazily pruned
        self._healed: dict[str, float] = {}  # vm -> raised at

    def start(self, view: View, now: float) -> list[Intent]:
        for r in view.vms.values():
            if r.state == VmState.DOWN:
                at = view.since.get(r.vm, now)
                self._down(VmStateChanged(r.vm, r.host, None, r.state, None, r.version, at))
        return self.tick(view, now)

    def on_changes(self, view: View, changes: Sequence[Change], now: float) -> list[Intent]:
        for c in changes:
            if isinstance(c, VmStateChanged):
                self._change(c)
        return []

    def tick(self, view: View, now: float) -> list[Intent]:
        """The heals whose debounce is over, for VMs still DOWN."""
        out: list[Intent] = []
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)
            if not self._live(timer):
                continue
            vm = timer[1]
            heal = self._heals.pop(vm)
            r = view.vms.get(vm)
            if r is None or r.state != VmState.DOWN:  # a change the runner did not pass on
                self.context.counts["flaps_suppressed"] += 1
                continue
            eid = self.event_id(vm, Action.HEAL, heal.cause.version)
            intent = self.intent(eid, r.host, vm, Action.HEAL, heal.cause)
            if intent is not None:
                out.append(intent)
        return out

    def next_due(self) -> float | None:
        while self._timers and not self._live(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def pending(self) -> int:
        return len(self._heals)

    def raised(self, intent: Intent, now: float) -> None:
        if intent.policy == self.name and self.config.ignore_repeat_within > 0:
            self._healed[intent.vm] = now

    def _change(self, c: VmStateChanged) -> None:
        if c.new == VmState.DOWN:
            if c.old != VmState.DOWN and c.vm not in self._heals:
                self._down(c)
            return
        if self._heals.pop(c.vm, None) is not None:
            self.context.counts["flaps_suppressed"] += 1
        if c.new is None:
            self._healed.pop(c.vm, None)

    def _down(self, c: VmStateChanged) -> None:
        healed = self._healed.get(c.vm)
        if healed is not None:
            if c.at - healed < self.config.ignore_repeat_within:
                self.context.counts["repeats_ignored"] += 1
                return
            del self._healed[c.vm]
        due = c.at + self.config.debounce
        self._heals[c.vm] = _Heal(due, c)
        heapq.heappush(self._timers, (due, c.vm))

    def _live(self, timer: tuple[float, str]) -> bool:
        heal = self._heals.get(timer[1])
        return heal is not None and heal.due == timer[0]
