"""Errors of the scheduler, worker and elasticity services, under one root."""

from __future__ import annotations


class CarouselError(Exception):
    """Root of the scheduler package's errors."""


class ActionFailed(CarouselError):
    """A driver ran the action and it failed; the event ends ``failed``."""


class DriverMisconfigured(CarouselError):
    """A driver cannot run with the settings it was given."""
