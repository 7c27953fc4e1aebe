"""The OpenStack driver: an event's action as Nova server actions through openstacksdk,
and a wait until the server has settled, so the worker's slot is held as long as the
cloud works.

============  ===========================================================================
action        what is called (``event.vm`` is the server's id, or its unique name)
============  ===========================================================================
heal          ``evacuate`` when the server's ``host_status`` is DOWN (2.16+), else
              ``os-start`` when SHUTOFF, else a HARD ``reboot``; waits for ACTIVE
stop          ``os-stop`` (nothing when SHUTOFF already); waits for SHUTOFF
pause         ``pause`` (nothing when PAUSED already); waits for PAUSED
migrate       ``migrate`` (payload ``host``: needs microversion 2.56); waits until the
              server is on another host, confirming the resize Nova then asks for
live_migrate  ``os-migrateLive`` (payload ``host`` or Nova's scheduler's choice,
              ``block_migration`` "auto" where the cloud allows); waits until ACTIVE on
              another host (the given one, if any). Both do nothing when the server is
              ACTIVE and off the event's host already (a retry after the move)
resize        ``resize`` to payload ``flavor`` (a flavor id or name), then
              ``confirmResize``; nothing when the server has that flavor already
update,       ``rebuild`` with payload ``image`` (an image id), or the server's own image;
upgrade       waits for ACTIVE on that image
scale_out     ``event.vm`` is the group: creates ``<group>-<8 hex>`` (derived from the
              event id, so a retry finds the server the first try created) with metadata
              ``carousel.group``, flavor/image/networks from the payload or copied from
              the newest replica; waits for ACTIVE
scale_in      ``event.vm`` is the group: deletes its newest replica (marked first with
              metadata ``carousel.scale_in`` = the event id, so a retry deletes the same
              one); waits until it is gone
============  ===========================================================================

Payload keys are read at the top level of ``event.payload`` or under ``params`` (the
simcloud driver's place), top level first.

A server action is "settled" when its ``OS-EXT-STS:task_state`` is empty and its status
is not transitional (BUILD, MIGRATING, RESIZE, REBUILD, ...): Nova sets the task state
before it answers 202, so a settled server that is not in the target state means the
action failed (its ``fault``, if any, is the message). ERROR fails at once. A poll that
fails (a 5xx, the cloud unreachable) is not a failure: the driver keeps reading the
server's record, backing off, until it shows how the action ended — a success then is
recorded as learnt late — or ``max_wait`` has passed: then the outcome is unknown
(:mod:`scheduler.worker.tracking`), as it is for a server still busy at ``max_wait``.

Every action call carries ``X-Carousel-Operation: <event id>`` and
``X-Carousel-Fencing-Token: <token>`` (keystoneauth's per-adapter ``additional_headers``
on the connection's compute proxy, set only around the action calls). Nova ignores
them; simcloud's Compute API uses the first as the operation id (a retried action joins
the first one's operation instead of running twice) and refuses a stale token with 409.
On a real cloud retries are made safe by the checks above (state already reached, the
event's scale-out server already there, the scale-in victim marked) instead.

One connection per thread: the headers are per connection, and a prefork worker has one
thread per process anyway.

This module is the driver (its settings, its connection, its errors);
:mod:`scheduler.worker.openstack_run` makes each action's calls and
:mod:`scheduler.worker.openstack_settle` waits for the server to settle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Self

import openstack
import requests
from keystoneauth1 import exceptions as ksa_exceptions
from openstack import config as os_config
from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from scheduler.worker.driver import CloudDriverConfig, DriverPlugin
from scheduler.worker.errors import ActionFailed, DriverMisconfigured
from scheduler.worker.hold import Hold
from scheduler.worker.openstack_run import Run
from scheduler.worker.settings import WorkerSettings
from shared.cloud import OpenStackConnection
from shared.models import VmEventMessage
from shared.openstack_connection import connect_endpoint as shared_connect

#: what a cloud that cannot be reached raises (no connection, no version document)
UNREACHABLE: tuple[type[BaseException], ...] = (
    ksa_exceptions.ConnectionError,
    ksa_exceptions.DiscoveryFailure,
    requests.ConnectionError,
)
#: what a failed call to the cloud raises (besides the HTTP errors, handled first)
CLOUD_ERRORS: tuple[type[BaseException], ...] = (
    os_exceptions.SDKException,
    ksa_exceptions.ClientException,
    requests.RequestException,
    OSError,
)


def connect_endpoint(
    compute_url: str, token: str | None, request_timeout: float | None = None
) -> Connection:
    """:func:`shared.openstack_connection.connect_endpoint`, a missing URL being a
    misconfigured driver."""
    try:
        return shared_connect(compute_url, token, request_timeout)
    except ValueError as exc:
        raise DriverMisconfigured(str(exc)) from exc


class OpenStackConfig(CloudDriverConfig, OpenStackConnection):
    """The Compute API to connect to, and how long to wait for it."""


class OpenStackDriver(DriverPlugin[OpenStackConfig]):
    config_model = OpenStackConfig

    def __init__(
        self,
        connect: Callable[[], Connection],
        *,
        max_wait: float = 1800.0,
        poll_interval: float = 2.0,
    ) -> None:
        self._connect = connect
        self.max_wait = max_wait
        self.poll_interval = poll_interval
        self._local = threading.local()

    @classmethod
    def from_config(cls, config: OpenStackConfig, worker: WorkerSettings) -> Self:
        """``OPENSTACK_CLOUD`` (a clouds.yaml entry) when set, else
        ``OPENSTACK_COMPUTE_URL`` (+ ``OPENSTACK_TOKEN``) without Keystone; waits up to
        ``ACTION_TIME_LIMIT``, polling every ``ACTION_POLL_INTERVAL``, HTTP requests time
        out after ``DRIVER_HTTP_TIMEOUT``."""
        if config.openstack_cloud:
            return cls.from_cloud(
                config.openstack_cloud,
                max_wait=worker.action_time_limit,
                poll_interval=config.action_poll_interval,
            )
        return cls.from_endpoint(
            config.openstack_compute_url,
            config.openstack_token or None,
            config.driver_http_timeout,
            max_wait=worker.action_time_limit,
            poll_interval=config.action_poll_interval,
        )

    @classmethod
    def from_cloud(cls, name: str, *, max_wait: float = 1800.0, poll_interval: float = 2.0) -> Self:
        """From the ``clouds.yaml`` entry ``name`` (Keystone, the catalog, the entry's
        auth type); checked at once, connected per thread on first use."""
        try:
            os_config.OpenStackConfig().get_one(cloud=name)
        except (os_exceptions.ConfigException, ksa_exceptions.ClientException) as exc:
            raise DriverMisconfigured(f"clouds.yaml entry {name!r}: {exc}") from exc
        return cls(
            lambda: openstack.connect(cloud=name), max_wait=max_wait, poll_interval=poll_interval
        )

    @classmethod
    def from_endpoint(
        cls,
        compute_url: str,
        token: str | None,
        timeout: float,
        *,
        max_wait: float = 1800.0,
        poll_interval: float = 2.0,
    ) -> Self:
        """From a Compute endpoint used without Keystone (see :func:`connect_endpoint`);
        ``timeout``: seconds per HTTP request; ``max_wait``: the longest an action may
        take to settle."""
        if not compute_url:
            raise DriverMisconfigured("the openstack driver needs OPENSTACK_COMPUTE_URL")
        return cls(
            lambda: connect_endpoint(compute_url, token, timeout),
            max_wait=max_wait,
            poll_interval=poll_interval,
        )

    def connection(self) -> Connection:
        """This thread's connection."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def execute(self, event: VmEventMessage, hold: Hold) -> str | None:
        what = f"{event.action.value} of {event.vm}"
        try:
            run = Run(self.connection(), event, hold, self.max_wait, self.poll_interval)
            run.go()
            return run.late
        except ActionFailed:
            raise
        except os_exceptions.HttpException as exc:
            raise ActionFailed(f"{what}: the cloud answered {_http_detail(exc)}") from exc
        except ValueError as exc:  # the SDK refusing an option the cloud's version lacks
            raise ActionFailed(f"{what}: {exc}") from exc
        except UNREACHABLE as exc:
            raise ActionFailed(f"{what}: the cloud is unreachable: {exc}") from exc
        except CLOUD_ERRORS as exc:
            raise ActionFailed(f"{what}: the cloud call failed: {exc!r}") from exc

    def close(self) -> None:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _http_detail(exc: os_exceptions.HttpException) -> str:
    return f"{exc.status_code}: {exc.details or exc.message}"
