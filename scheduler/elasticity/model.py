"""Value types shared by the elasticity policy and its adapters. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class WorkerState(StrEnum):
    BOOTING = "booting"  # spawned, not yet seen on the broker
    IDLE = "idle"  # heartbeating, no task running
    BUSY = "busy"  # heartbeating, running at least one task
    DRAINING = "draining"  # being retired by us: consumer cancelled, shutting down
    LOST = "lost"  # heartbeats stopped or process gone, and not draining


@dataclass(frozen=True)
class WorkerView:
    name: str  # Celery node name, e.g. "elastic.default.1a2b3c4d@host"
    profile: str
    state: WorkerState
    since: float  # when it entered this state (spawn time for BOOTING)


@dataclass(frozen=True)
class ProfileConfig:
    name: str
    min_workers: int = 0
    max_workers: int = 4
    concurrency: int = 1  # tasks one worker runs at once
    target_latency: float = 10.0  # seconds to drain the backlog we aim for
    default_action_seconds: float = 1.0  # until a mean has been learnt
    tolerance: float = 0.1  # |desired/current - 1| within this: no change
    scale_up_window: float = 0.0  # seconds of recommendations to take the MIN of
    scale_down_window: float = 30.0  # seconds of recommendations to take the MAX of
    scale_up_utilisation: float = 0.8  # this busy, with work waiting: one more worker
    scale_down_utilisation: float = 0.2  # more busy than this: do not shrink


@dataclass(frozen=True)
class Observation:
    """What the engine saw of one profile at one evaluation."""

    profile: str
    backlog: int  # ready + running task messages + events still waiting for this profile
    workers: tuple[WorkerView, ...]
    mean_action_seconds: float | None = None  # learnt from task runtimes, if any

    def count(self, *states: WorkerState) -> int:
        return sum(1 for w in self.workers if w.state in states)


@dataclass
class ProfileMemory:
    """What the policy remembers of one profile between evaluations (owned by the
    engine, changed only by :func:`scheduler.elasticity.policy.decide`)."""

    recommendations: list[tuple[float, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    profile: str
    at: float
    backlog: int
    action_seconds: float
    capacity: int  # idle + busy + booting: what we have and what is coming
    raw: int  # workers the backlog asks for, within [min, max]
    stabilized: int  # after tolerance and the stabilisation windows
    allotted: int  # this profile's share of the budget
    target: int
    spawn: int
    retire: int
    reason: str
    blocked_by: str | None = None  # a named condition that held the decision back


@dataclass(frozen=True)
class NodeInfo:
    """What Celery's event stream says of one worker node."""

    first_seen: float
    last_seen: float  # last heartbeat or event, on our clock
    active: int  # tasks running now (heartbeat count, or started-not-finished if higher)
    idle_since: float  # when it last went from running something to running nothing
    offline: bool = False  # said goodbye (worker-offline)
