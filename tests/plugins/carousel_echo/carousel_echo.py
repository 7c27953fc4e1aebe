"""An example Carousel plug-in: a driver and a monitoring policy kind.

- ``DRIVER=echo``: each action is written as one JSON line to ``ECHO_FILE`` (the
  driver's own setting: the worker refuses to start without it).
- ``kind: hot_vm``: a VM whose CPU reaches ``threshold`` gets ``action``, once until it
  cools below the threshold again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Literal, Self

from pydantic import Field

from producer.monitoring.kind import PolicyConfig, PolicyContext, PolicyKind
from producer.monitoring.model import Change, Intent, UtilisationChanged, View
from scheduler.worker.driver import DriverConfig, DriverPlugin
from scheduler.worker.hold import Hold
from scheduler.worker.settings import WorkerSettings
from shared.models import Action, VmEventMessage


class EchoConfig(DriverConfig):
    echo_file: str = Field(description="File the echo driver appends each action to (ECHO_FILE).")


class EchoDriver(DriverPlugin[EchoConfig]):
    config_model = EchoConfig

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def from_config(cls, config: EchoConfig, worker: WorkerSettings) -> Self:
        return cls(config.echo_file)

    def execute(self, event: VmEventMessage, hold: Hold) -> str | None:
        hold.check()  # a holder whose claim is over does nothing
        line = {"id": event.id, "action": event.action.value, "vm": event.vm, "token": hold.token}
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        return f"echoed by pid {os.getpid()}"


class HotVmConfig(PolicyConfig):
    kind: str = "hot_vm"
    threshold: float = Field(0.9, gt=0, le=1)
    action: Literal["migrate", "live_migrate", "resize"] = "live_migrate"


class HotVm(PolicyKind[HotVmConfig]):
    config_model = HotVmConfig

    def __init__(self, config: HotVmConfig, context: PolicyContext) -> None:
        super().__init__(config, context)
        self._hot: set[str] = set()  # VMs asked for, until they cool down

    def start(self, view: View, now: float) -> list[Intent]:
        changes = [
            UtilisationChanged(r.vm, r.host, r.group, r.cpu, r.ram, r.version, now)
            for r in view.vms.values()
        ]
        return self.on_changes(view, changes, now)

    def on_changes(self, view: View, changes: Sequence[Change], now: float) -> list[Intent]:
        out: list[Intent] = []
        for c in changes:
            if not isinstance(c, UtilisationChanged):
                continue
            if c.cpu < self.config.threshold:
                self._hot.discard(c.vm)
            elif c.vm not in self._hot:
                self._hot.add(c.vm)
                action = Action(self.config.action)
                eid = self.event_id(c.vm, action, c.version)
                intent = self.intent(eid, c.host, c.vm, action, c, {"cpu": c.cpu})
                if intent is not None:
                    out.append(intent)
        return out
