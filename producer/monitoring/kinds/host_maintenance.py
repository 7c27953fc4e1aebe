"""``kind: host_maintenance``: every VM on a host entering MAINTENANCE is migrated off it,
one event per VM, queued under that host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from producer.monitoring.kind import PolicyConfig, PolicyKind
from producer.monitoring.model import (
    Change,
    HostState,
    HostStateChanged,
    Intent,
    View,
    VmRecord,
)
from shared.models import Action


class HostMaintenanceConfig(PolicyConfig):
    kind: str = "host_maintenance"
    action: Literal["live_migrate", "migrate"] = "live_migrate"

    @property
    def event_action(self) -> Action:
        return Action(self.action)


class HostMaintenance(PolicyKind[HostMaintenanceConfig]):
    config_model = HostMaintenanceConfig

    def start(self, view: View, now: float) -> list[Intent]:
        """Hosts in maintenance that still hold VMs get their migrations (the same ids as
        before a restart: the cause is the host's version, not the time)."""
        on: dict[str, list[VmRecord]] = {}
        for r in view.vms.values():
            on.setdefault(r.host, []).append(r)
        out: list[Intent] = []
        for h in view.hosts.values():
            if h.state == HostState.MAINTENANCE and h.host in on:
                cause = HostStateChanged(h.host, None, h.state, h.version, now)
                out += self._migrations(cause, on[h.host])
        return out

    def on_changes(self, view: View, changes: Sequence[Change], now: float) -> list[Intent]:
        out: list[Intent] = []
        for c in changes:
            if (
                isinstance(c, HostStateChanged)
                and c.new == HostState.MAINTENANCE
                and c.old != HostState.MAINTENANCE
            ):
                out += self._migrations(c, view.vms_on(c.host))
        return out

    def _migrations(self, cause: HostStateChanged, vms: Sequence[VmRecord]) -> list[Intent]:
        out: list[Intent] = []
        action = self.config.event_action
        for r in vms:
            eid = self.event_id(r.vm, action, cause.host, cause.version)
            intent = self.intent(eid, cause.host, r.vm, action, cause)
            if intent is not None:
                out.append(intent)
        return out
