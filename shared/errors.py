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


class VmRemoved(CarouselError):
    """A dead-lettered event cannot be re-driven: its key is no longer in the mapping (its
    VM was removed), so no dispatcher would consume the queue it would be published to."""

    def __init__(self, event_id: str, host: str, vm: str, policy: str) -> None:
        super().__init__(
            f"event {event_id!r} cannot be re-driven: VM {vm!r} on host {host!r} (policy "
            f"{policy!r}) was removed from the mapping; post the event again under a new "
            "id, or post an event for that VM and policy to bring it back and re-drive"
        )
        self.event_id, self.host, self.vm, self.policy = event_id, host, vm, policy


class LeaseLost(CarouselError):
    """Another process holds the lease now: whatever needed it must stop."""
