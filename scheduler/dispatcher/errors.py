"""Errors of the dispatcher (``carousel-scheduler``)."""

from __future__ import annotations

from shared.errors import CarouselError


class DispatcherError(CarouselError):
    """Root of the dispatcher's errors."""


class Unconfirmed(DispatcherError):
    """The broker nacked a message, or did not confirm in time."""
