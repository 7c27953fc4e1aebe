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


class EventFailed(WorkerError):
    """Raised by the task, after the ledger recorded it, when the event it ran (or found
    finished) ended ``failed``: Celery then records the task as FAILURE — red in Flower,
    counted as failed — with the reason as the message. Expected (the task's ``throws``):
    logged without a traceback, never retried, its message acked; its task-failed event
    frees the event's slot as a task-succeeded one does."""


class DriverMisconfigured(WorkerError):
    """A driver cannot run with the settings it was given."""


class ClaimLost(WorkerError):
    """The claim under which an action runs is over (another holder took the event
    over, or it could not be renewed for a whole lease): the driver stops, and its
    outcome is not recorded."""
