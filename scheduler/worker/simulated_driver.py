"""The simulated driver (``DRIVER=simulated``, the default): an action takes a configured
time and has no effect.

A payload ``{"simulate": {"duration": s, "fail": "reason", "crash": true}}`` overrides
the duration, injects a failure, or kills the process running the action as an
out-of-memory kill would (for tests and demos).
"""

from __future__ import annotations

import os
from typing import Self

from pydantic import Field

from scheduler.worker.driver import DriverConfig, DriverPlugin
from scheduler.worker.errors import ActionFailed
from scheduler.worker.hold import Hold
from scheduler.worker.settings import WorkerSettings
from shared.models import VmEventMessage

#: exit status of a process the simulated driver crashes on purpose
CRASH_EXIT = 70
#: the longest a simulated action may take: a payload cannot tie a worker up for ever
MAX_SIMULATED_SECONDS = 3600.0


class SimulatedConfig(DriverConfig):
    simulated_duration: float = Field(
        0.0, ge=0, description="Seconds a simulated action takes (SIMULATED_DURATION)."
    )
    simulated_durations: dict[str, float] = Field(
        default_factory=dict,
        description='Per-action seconds, JSON, e.g. {"migrate": 2} (SIMULATED_DURATIONS).',
    )


class SimulatedDriver(DriverPlugin[SimulatedConfig]):
    config_model = SimulatedConfig

    def __init__(self, default: float = 0.0, per_action: dict[str, float] | None = None) -> None:
        self.default = default
        self.per_action = per_action or {}

    @classmethod
    def from_config(cls, config: SimulatedConfig, worker: WorkerSettings) -> Self:
        return cls(config.simulated_duration, config.simulated_durations)

    def execute(self, event: VmEventMessage, hold: Hold) -> None:
        sim = event.payload.get("simulate")
        if not isinstance(sim, dict):
            sim = {}
        try:
            duration = float(sim.get("duration", self.per_action.get(event.action, self.default)))
        except (TypeError, ValueError) as exc:
            raise ActionFailed(f"bad simulate.duration: {sim.get('duration')!r}") from exc
        if not duration <= MAX_SIMULATED_SECONDS:  # NaN too
            raise ActionFailed(
                f"simulate.duration {duration} is above the {MAX_SIMULATED_SECONDS} s a "
                "simulated action may take"
            )
        if duration > 0:
            hold.wait(duration)
        if sim.get("crash") is True:
            os._exit(CRASH_EXIT)  # no cleanup, no reply: as the kernel's OOM killer would
        if sim.get("fail"):
            raise ActionFailed(str(sim["fail"]))
