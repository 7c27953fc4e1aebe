"""Capped exponential backoff, the one used by every reconnect and retry loop."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays ``first, first*factor, first*factor², …`` up to ``cap``; :meth:`reset`
    starts again from ``first`` (after a success). Pure: the caller does the waiting.

    ``waited`` adds up every delay handed out since the last reset, for callers that
    give up after some total time."""

    first: float = 0.2
    cap: float = 10.0
    factor: float = 2.0
    waited: float = field(default=0.0, init=False)
    _next: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap or self.factor < 1:
            raise ValueError("backoff needs 0 < first <= cap and factor >= 1")
        self._next = self.first

    def next(self) -> float:
        """The delay to wait now; the following one grows."""
        delay = self._next
        self._next = min(self._next * self.factor, self.cap)
        self.waited += delay
        return delay

    def reset(self) -> None:
        self._next = self.first
        self.waited = 0.0
