"""``kind: autoscale``: the mean metric of a group's ACTIVE replicas against a band, within
the group's min and max, then a cooldown after each scaling (out or in, by this policy
or another), so the first scaling's effect is measured before a second one is asked
for. A scaling event is queued under the pseudo-host ``groups_host``, with the group as
its VM."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from producer.monitoring.kind import PolicyConfig, PolicyContext, PolicyKind
from producer.monitoring.model import (
    Change,
    GroupRecord,
    Intent,
    UtilisationChanged,
    View,
    VmState,
    VmStateChanged,
)
from shared.models import Action
from shared.names import Name

#: what makes a group scale: a change of one of its VMs
Trigger = VmStateChanged | UtilisationChanged
#: the events that make a group cool down
SCALINGS = frozenset({Action.SCALE_OUT, Action.SCALE_IN})


class AutoscaleConfig(PolicyConfig):
    kind: str = "autoscale"
    metric: Literal["cpu", "ram"] = "cpu"
    high: float = Field(0.8, gt=0, le=1)
    low: float = Field(0.2, ge=0, lt=1)
    cooldown: float = Field(60.0, ge=0)
    #: the pseudo-host whose queues hold the groups' scaling events (vm = the group)
    groups_host: Name = "vm-groups"
    #: the groups this policy scales; None = every group
    groups: tuple[Name, ...] | None = None

    @model_validator(mode="after")
    def _band(self) -> AutoscaleConfig:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def covers(self, group: str) -> bool:
        return self.groups is None or group in self.groups


class Autoscale(PolicyKind[AutoscaleConfig]):
    config_model = AutoscaleConfig

    def __init__(self, config: AutoscaleConfig, context: PolicyContext) -> None:
        super().__init__(config, context)
        self._cooldown: dict[str, float] = {}  # group -> until
        self._seen: dict[str, tuple[GroupRecord, int]] = {}  # group -> (record, size)
        self._asked: dict[str, str] = {}  # group -> the last event id asked for

    def start(self, view: View, now: float) -> list[Intent]:
        out: list[Intent] = []
        for group in view.groups:
            if self.config.covers(group):
                out += self._scale(view, group, None, now)
        return out

    def on_changes(self, view: View, changes: Sequence[Change], now: float) -> list[Intent]:
        """Groups with a member's change, and groups whose bounds or membership changed
        (a VM gone or moved between groups: the updater reports no change of a group)."""
        triggers: dict[str, Trigger] = {}  # group -> its latest member change
        for c in changes:
            if isinstance(c, VmStateChanged):
                r = view.vms.get(c.vm)
                if r is not None and r.group is not None:
                    _keep_latest(triggers, r.group, c)
            elif isinstance(c, UtilisationChanged) and c.group is not None:
                _keep_latest(triggers, c.group, c)
        covers = self.config.covers
        todo: dict[str, Trigger | None] = {g: c for g, c in triggers.items() if covers(g)}
        for group, record in view.groups.items():
            seen = self._seen.get(group)
            if group not in todo and covers(group) and seen != (record, _size(view, group)):
                todo[group] = None
        for group in [g for g in self._seen if g not in view.groups]:
            del self._seen[group]
            self._asked.pop(group, None)
        out: list[Intent] = []
        for group, cause in todo.items():
            out += self._scale(view, group, cause, now)
        return out

    def tick(self, view: View, now: float) -> list[Intent]:
        """Groups whose cooldown ended are evaluated again: a group that stayed busy
        through the cooldown gets no new change to trigger it."""
        out: list[Intent] = []
        for group, until in list(self._cooldown.items()):
            if until <= now:
                del self._cooldown[group]
                out += self._scale(view, group, None, now)
        return out

    def next_due(self) -> float | None:
        return min(self._cooldown.values(), default=None)

    def pending(self) -> int:
        return len(self._cooldown)

    def raised(self, intent: Intent, now: float) -> None:
        """After any scaling of a group this policy covers — its own or another
        policy's — the group cools down: a second policy (one on RAM beside one on CPU)
        must not scale it back before the first scaling's effect is measured."""
        group = intent.vm
        if intent.action in SCALINGS and self.config.covers(group) and self.config.cooldown > 0:
            until = now + self.config.cooldown
            self._cooldown[group] = max(until, self._cooldown.get(group, until))

    def _scale(self, view: View, group: str, cause: Trigger | None, now: float) -> list[Intent]:
        rule = self.config
        record = view.groups.get(group)
        if record is None:
            return []
        n = _size(view, group)
        self._seen[group] = (record, n)
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
        eid = self.event_id(group, action, host, n, cause.vm, cause.version)
        if self._asked.get(group) == eid:
            return []
        payload = {"group": group, "metric": rule.metric, "mean": round(mean, 4), "members": n}
        intent = self.intent(eid, host, group, action, cause, payload)
        if intent is None:
            return []
        self._asked[group] = eid
        return [intent]


def _keep_latest(triggers: dict[str, Trigger], group: str, c: Trigger) -> None:
    """The group's latest change; of one VM record's two changes, its utilisation."""
    prev = triggers.get(group)
    rank = (c.version, isinstance(c, UtilisationChanged))
    if prev is None or rank >= (prev.version, isinstance(prev, UtilisationChanged)):
        triggers[group] = c


def _size(view: View, group: str) -> int:
    return len(view.members.get(group, ()))
