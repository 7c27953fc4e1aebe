"""Errors of the dispatcher (``carousel-dispatcher``)."""

from __future__ import annotations

from shared.errors import CarouselError


class DispatcherError(CarouselError):
    """Root of the dispatcher's errors."""


class Unconfirmed(DispatcherError):
    """The broker nacked a message, or did not confirm in time."""


class NotDeadLettered(DispatcherError):
    """A re-drive of an event that is not in the dead-letter record."""


class RedriveFailed(DispatcherError):
    """A re-driven event could not be published: it stays dead-lettered."""
