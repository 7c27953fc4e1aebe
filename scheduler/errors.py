"""Errors of the scheduler, worker and elasticity services, under one root."""

from __future__ import annotations


class CarouselError(Exception):
    """Root of the scheduler package's errors."""


class ActionFailed(CarouselError):
    """A driver ran the action and it failed; the event ends ``failed``."""


class DriverMisconfigured(CarouselError):
    """A driver cannot run with the settings it was given."""


class ElasticityError(CarouselError):
    """Root of the elasticity worker's named conditions (logged, shown in /status;
    none of them stops the control loop)."""


class InsufficientResources(ElasticityError):
    """The total worker budget is used up: no worker can be spawned."""


class MinimumWorkersReached(ElasticityError):
    """A profile is at its minimum: no worker may be torn down."""


class NoIdleWorkersError(ElasticityError):
    """Every worker of the profile is busy: none may be torn down."""


class NoTearDownTargets(ElasticityError):
    """The profile has no worker at all that could be torn down."""
