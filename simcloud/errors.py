"""What the cloud refuses, each with the HTTP status the app answers it with."""

from __future__ import annotations


class CloudError(Exception):
    """A request the cloud refuses; ``status`` is its HTTP status."""

    status = 400


class NotFound(CloudError):
    """No such VM, host, group or operation."""

    status = 404


class Conflict(CloudError):
    """The request clashes with the cloud's state (a name taken, an operation id reused
    for another action)."""

    status = 409


class StaleToken(Conflict):
    """A fencing token below the largest one seen for the operation: a stale holder."""


class Invalid(CloudError, ValueError):
    """A malformed argument (a bad name, a fraction outside 0..1, a negative duration)."""

    status = 422
