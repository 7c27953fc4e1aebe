"""Errors of the elasticity worker (``carousel-elasticity``): its named conditions."""

from __future__ import annotations

from typing import ClassVar

from scheduler.elasticity.model import Condition
from shared.errors import CarouselError


class ElasticityError(CarouselError):
    """Root of the elasticity worker's named conditions (logged, shown in /status;
    none of them stops the control loop). Each carries its :class:`Condition`."""

    condition: ClassVar[Condition]


class InsufficientResources(ElasticityError):
    """The total worker budget is used up: no worker can be spawned."""

    condition = Condition.INSUFFICIENT_RESOURCES


class MinimumWorkersReached(ElasticityError):
    """A profile is at its minimum: no worker may be torn down."""

    condition = Condition.MINIMUM_WORKERS_REACHED


class NoIdleWorkersError(ElasticityError):
    """Every worker of the profile is busy: none may be torn down."""

    condition = Condition.NO_IDLE_WORKERS


class NoTearDownTargets(ElasticityError):
    """The profile has no worker at all that could be torn down."""

    condition = Condition.NO_TEAR_DOWN_TARGETS
