"""The root of every error Carousel raises on purpose.

Each service has its own ``errors.py`` whose classes derive from :class:`CarouselError`,
so ``except CarouselError`` catches every named condition and nothing else.
"""

from __future__ import annotations


class CarouselError(Exception):
    """Root of Carousel's errors."""


class Conflict(CarouselError):
    """A re-posted event id carries a different host, VM, policy or action."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"event id {event_id!r} was already accepted with other content")
        self.event_id = event_id


class LeaseLost(CarouselError):
    """Another process holds the lease now: whatever needed it must stop."""
