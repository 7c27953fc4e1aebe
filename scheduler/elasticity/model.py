"""Value types shared by the scaling rules and their adapters. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


class Condition(StrEnum):
    """A named condition that holds a decision or an action back. The values are the
    names /status shows (as ``blocked_by`` and as an event's ``kind``)."""

    INSUFFICIENT_RESOURCES = "InsufficientResources"  # the budget has no room left
    MINIMUM_WORKERS_REACHED = "MinimumWorkersReached"  # no worker may go below the minimum
    NO_IDLE_WORKERS = "NoIdleWorkersError"  # every worker is busy: none may be retired
    NO_TEAR_DOWN_TARGETS = "NoTearDownTargets"  # the profile has no worker at all
    SCALING_IN_PROGRESS = "ScalingInProgress"  # a worker is still booting or draining


class PoolSettings(BaseModel):
    """One profile's pool of workers, as given in ELASTICITY_PROFILES: its bounds and
    how it scales. These defaults are the ones the README documents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_workers: int = Field(1, ge=0)
    max_workers: int = Field(4, ge=0)
    concurrency: int = Field(1, ge=1)  # tasks one worker runs at once
    target_latency: float = Field(10.0, gt=0)  # seconds to drain the backlog we aim for
    default_action_seconds: float = Field(1.0, gt=0)  # until a mean has been learnt
    tolerance: float = Field(0.1, ge=0, lt=1)  # |desired/current - 1| within this: no change
    scale_up_window: float = Field(0.0, ge=0)  # seconds of recommendations to take the MIN of
    scale_down_window: float = Field(30.0, ge=0)  # seconds of recommendations to take the MAX of
    # this busy, with work waiting: one more worker
    scale_up_utilisation: float = Field(0.8, gt=0, le=1)
    # more busy than this: do not shrink
    scale_down_utilisation: float = Field(0.2, ge=0, le=1)  # 1: never hold a shrink

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_workers > self.max_workers:
            raise ValueError("min_workers is larger than max_workers")
        return self


class ProfileConfig(PoolSettings):
    """A profile's pool settings with the profile's name: what the scaling rules and the
    providers read."""

    name: str


class Backlog(NamedTuple):
    """A profile's work as probed: its tasks (dispatched: ready in its actions queue, or
    running) and its events still waiting in the per-key queues (not yet dispatched)."""

    tasks: int
    waiting: int = 0

    @property
    def total(self) -> int:
        return self.tasks + self.waiting


@dataclass(frozen=True)
class Observation:
    """What the engine saw of one profile at one evaluation."""

    profile: str
    backlog: int  # ready + running task messages + events still waiting for this profile
    workers: tuple[WorkerView, ...]
    mean_action_seconds: float | None = None  # learnt from task runtimes, if any
    #: of ``backlog``, the events still waiting in the per-key queues (not dispatched)
    waiting: int = 0
    #: the active dispatcher is paused: its waiting events cannot be dispatched
    paused: bool = False

    def count(self, *states: WorkerState) -> int:
        return sum(1 for w in self.workers if w.state in states)


@dataclass
class ProfileMemory:
    """What the scaling rules remember of one profile between evaluations (owned by the
    engine, changed only by :func:`scheduler.elasticity.scaling.decide`)."""

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
    blocked_by: Condition | None = None  # what held the decision back, if anything


@dataclass(frozen=True)
class NodeInfo:
    """What Celery's event stream says of one worker node."""

    first_seen: float
    last_seen: float  # last heartbeat or event, on our clock
    active: int  # tasks running now (heartbeat count, or started-not-finished if higher)
    idle_since: float  # when it last went from running something to running nothing
    offline: bool = False  # said goodbye (worker-offline)
