"""Errors of the Celery worker (``carousel-worker``)."""

from __future__ import annotations

from shared.errors import CarouselError


class WorkerError(CarouselError):
    """Root of the worker's errors."""


class ActionFailed(WorkerError):
    """A driver ran the action and it failed; the event ends ``failed``."""


class DriverMisconfigured(WorkerError):
    """A driver cannot run with the settings it was given."""
