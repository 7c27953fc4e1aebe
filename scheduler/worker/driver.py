"""What a driver is: the port the worker runs each action through, and the base class of a
driver registered by name (entry-point group ``carousel.drivers``, see
:mod:`scheduler.worker.drivers` and ``docs/extending.md``).

Every call carries the claim's fencing token (``hold.token``): it grows with each claim
of the event, so a cloud API that remembers the largest token it has seen per event can
refuse a stale holder (a worker whose claim was taken over after it stopped renewing
it). A driver waits with ``hold.wait``, never ``time.sleep``: a holder whose claim is
over stops there (:mod:`scheduler.worker.hold`). A cloud driver that loses sight of an
operation does not call it failed: it asks again until it knows
(:mod:`scheduler.worker.tracking`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Protocol, Self, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings

from scheduler.worker.hold import Hold
from scheduler.worker.settings import WorkerSettings
from shared.models import VmEventMessage
from shared.settings import ENVIRONMENT


class Driver(Protocol):
    """The port: how the worker carries out an event's action."""

    def execute(self, event: VmEventMessage, hold: Hold) -> str | None:
        """Carry out ``event.action`` under the claim ``hold``; raise
        :class:`ActionFailed` if it failed (:class:`OutcomeUnknown` if whether it did
        could not be learnt; :class:`ClaimLost` once the claim is over). Returns None,
        or a note to record with the success (how its outcome was learnt)."""


class DriverConfig(BaseSettings):
    """A driver's own settings, read from the environment as every setting is (a field
    ``webhook_url`` from ``WEBHOOK_URL``). Each field's description says what it is and
    names its variable; the worker reads them at start and refuses to start, naming the
    variable, if one is invalid."""

    model_config = ENVIRONMENT


class HttpDriverConfig(DriverConfig):
    """Settings of the drivers that call an HTTP API."""

    driver_http_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds one HTTP request of a driver that calls an HTTP API (the "
        "webhook, simcloud and openstack drivers, and a plug-in built on HttpDriverConfig) "
        "may take (DRIVER_HTTP_TIMEOUT).",
    )


class CloudDriverConfig(HttpDriverConfig):
    """Settings of the drivers that start an operation on a cloud and wait for it."""

    action_poll_interval: float = Field(
        0.2,
        gt=0,
        description="Seconds between checks of a cloud operation the simcloud or "
        "openstack driver waits for (ACTION_POLL_INTERVAL).",
    )


C = TypeVar("C", bound=DriverConfig)


class DriverPlugin(ABC, Generic[C]):
    """Base of a driver registered by name: it declares its settings (``config_model``,
    a :class:`DriverConfig`) and is built from them once per worker process."""

    #: the driver's settings; ``from_config`` gets an instance of it
    config_model: ClassVar[type[DriverConfig]] = DriverConfig

    @classmethod
    @abstractmethod
    def from_config(cls, config: C, worker: WorkerSettings) -> Self:
        """The driver, from its settings and the worker's (``ACTION_TIME_LIMIT``...).
        Raise :class:`DriverMisconfigured` saying which setting to fix: the worker
        builds its driver once at start to find out, and refuses to start."""

    @abstractmethod
    def execute(self, event: VmEventMessage, hold: Hold) -> str | None:
        """See :meth:`Driver.execute`."""

    def close(self) -> None:
        """Release what the driver holds (connections); nothing by default."""
