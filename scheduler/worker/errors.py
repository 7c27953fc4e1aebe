"""Errors of the Celery worker (``carousel-worker``)."""

from __future__ import annotations

from shared.errors import CarouselError


class WorkerError(CarouselError):
    """Root of the worker's errors."""


class ActionFailed(WorkerError):
    """A driver ran the action and it failed; the event ends ``failed``."""


class OutcomeUnknown(ActionFailed):
    """The cloud may still be working on the action, and its outcome could not be learnt
    within the driver's bound (the cloud unreachable, or the operation still running, at
    ``ACTION_TIME_LIMIT``): the event ends ``failed`` and is dead-lettered, for an operator
    to look at, rather than freed as an ordinary failure."""


class DriverMisconfigured(WorkerError):
    """A driver cannot run with the settings it was given."""


class ClaimLost(WorkerError):
    """The claim under which an action runs is over (another holder took the event
    over, or it could not be renewed for a whole lease): the driver stops, and its
    outcome is not recorded."""
