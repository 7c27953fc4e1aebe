"""Each profile's pool over the last hour against its backlog, for a chart on /history.

One sample per decision: the workers by state, the backlog and the target the decision
was made on, at the decision's time. Pure: the time comes with each sample (no clock
here), nothing is read or written outside the object.

It stays bounded however short ``ELASTICITY_INTERVAL`` is: time is cut into steps of
``step`` seconds (aligned on multiples of ``step``), and a profile keeps at most one
sample per step — the *latest* of the step, whole. Its workers, backlog and target are
then one instant, as /status's are, rather than a backlog peak beside counts taken at
another time; a peak shorter than a step is thus not drawn. Samples older than
``window`` seconds before the latest are dropped, so a profile holds at most
``ceil(window / step) + 1`` samples.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from scheduler.elasticity.model import WorkerState

#: an hour: what an operator's live page draws
WINDOW_SECONDS = 3600
#: a sample per this many seconds, at most (per profile): a few hundred per window
STEP_SECONDS = 10


@dataclass(frozen=True)
class Sample:
    """One profile at one decision."""

    at: float
    workers: Mapping[WorkerState, int]  # every state, zeros too
    backlog: int
    desired: int  # the decision's target


@dataclass
class PoolHistory:
    """The recent samples of each profile, oldest first, at most one per ``step``."""

    window: int = WINDOW_SECONDS
    step: int = STEP_SECONDS
    _samples: dict[str, deque[Sample]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.step <= self.window:
            raise ValueError("the step must be positive and no longer than the window")

    @property
    def capacity(self) -> int:
        """The most samples one profile can hold: one per step a window can touch."""
        return math.ceil(self.window / self.step) + 1

    def record(
        self,
        profile: str,
        at: float,
        workers: Mapping[WorkerState, int],
        backlog: int,
        desired: int,
    ) -> None:
        """Add what ``profile`` was at ``at``; it replaces a sample of the same step.

        A time earlier than the latest sample's (the wall clock stepped back) drops the
        samples after it, so the history stays in order.
        """
        sample = Sample(
            at, MappingProxyType({s: workers.get(s, 0) for s in WorkerState}), backlog, desired
        )
        samples = self._samples.setdefault(profile, deque(maxlen=self.capacity))
        while samples and samples[-1].at > at:
            samples.pop()
        if samples and self._step_of(samples[-1].at) == self._step_of(at):
            samples.pop()
        samples.append(sample)
        while samples[0].at < at - self.window:
            samples.popleft()

    def samples(self, profile: str, since: float) -> list[Sample]:
        """``profile``'s samples taken at ``since`` or later, oldest first."""
        return [s for s in self._samples.get(profile, ()) if s.at >= since]

    def _step_of(self, at: float) -> int:
        return math.floor(at / self.step)
