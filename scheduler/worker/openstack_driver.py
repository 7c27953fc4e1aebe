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
live_migrate  ``os-migrateLive`` (payload ``host`` or the scheduler's choice,
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
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import openstack
import requests
from keystoneauth1 import exceptions as ksa_exceptions
from openstack import config as os_config
from openstack import exceptions as os_exceptions
from openstack import utils as os_utils
from openstack.compute.v2.server import Server
from openstack.connection import Connection

from scheduler.worker.driver import CloudDriverConfig, DriverPlugin
from scheduler.worker.errors import ActionFailed, DriverMisconfigured
from scheduler.worker.hold import Hold
from scheduler.worker.settings import WorkerSettings
from scheduler.worker.tracking import Tracker
from shared.cloud import (
    FENCING_HEADER,
    GROUP_KEY,
    GROUP_MAX_KEY,
    GROUP_MIN_KEY,
    OPERATION_HEADER,
    SCALE_IN_KEY,
    OpenStackConnection,
)
from shared.models import Action, VmEventMessage
from shared.openstack_connection import connect_endpoint as shared_connect

log = logging.getLogger(__name__)

#: names the scale-out server of an event (uuid5 of the event id in this namespace)
NAME_NAMESPACE = uuid.UUID("9b7c2f0e-5d0a-4c1e-9a57-6f1f5b0c2d11")
#: statuses during which a server is still busy, whatever its task state says
TRANSITIONAL = frozenset(
    {"BUILD", "MIGRATING", "RESIZE", "REVERT_RESIZE", "REBUILD", "REBOOT", "HARD_REBOOT"}
)
#: what polling waits out (HTTP errors: 5xx only)
TRANSIENT: tuple[type[BaseException], ...] = (
    os_exceptions.HttpException,
    ksa_exceptions.ConnectionError,
    requests.ConnectionError,
)
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
        out after ``WEBHOOK_TIMEOUT``."""
        if config.openstack_cloud:
            return cls.from_cloud(
                config.openstack_cloud,
                max_wait=worker.action_time_limit,
                poll_interval=config.action_poll_interval,
            )
        return cls.from_endpoint(
            config.openstack_compute_url,
            config.openstack_token or None,
            config.webhook_timeout,
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
            run = _Run(self.connection(), event, hold, self.max_wait, self.poll_interval)
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


class _Run:
    """One execution of one event."""

    def __init__(
        self,
        conn: Connection,
        event: VmEventMessage,
        hold: Hold,
        max_wait: float,
        poll_interval: float,
    ) -> None:
        self.conn = conn
        self.compute = conn.compute
        self.event = event
        self.hold = hold
        self.token = hold.token
        self.tracker = Tracker(f"{event.action.value} of {event.vm}", poll_interval, max_wait)
        #: the note of a success learnt late (the cloud could not be asked for a while)
        self.late: str | None = None

    def go(self) -> None:
        handlers: dict[Action, Callable[[], None]] = {
            Action.HEAL: self.heal,
            Action.STOP: self.stop,
            Action.PAUSE: self.pause,
            Action.MIGRATE: self.migrate,
            Action.LIVE_MIGRATE: self.live_migrate,
            Action.RESIZE: self.resize,
            Action.UPDATE: self.rebuild,
            Action.UPGRADE: self.rebuild,
            Action.SCALE_OUT: self.scale_out,
            Action.SCALE_IN: self.scale_in,
        }
        handlers[self.event.action]()

    # -- actions -------------------------------------------------------------------
    def heal(self) -> None:
        server = self.server()
        source = server.compute_host
        if server.host_status == "DOWN":  # (2.16+) a dead host: rebuild it elsewhere
            shared = None
            if not os_utils.supports_microversion(self.compute, "2.14"):
                shared = bool(self.param("on_shared_storage"))
            with self.headers():
                self.compute.evacuate_server(server, on_shared_storage=shared)
            self.settle(
                server.id,
                f"evacuation off {source}",
                lambda s: s.status == "ACTIVE" and self.moved(s, None, source),
            )
            return
        with self.headers():
            if server.status == "SHUTOFF":
                self.compute.start_server(server)
            else:
                self.compute.reboot_server(server, "HARD")
        self.settle(server.id, "heal", lambda s: s.status == "ACTIVE")

    def stop(self) -> None:
        server = self.server()
        if server.status != "SHUTOFF":
            with self.headers():
                self.compute.stop_server(server)
        self.settle(server.id, "stop", lambda s: s.status == "SHUTOFF")

    def pause(self) -> None:
        server = self.server()
        if server.status != "PAUSED":
            with self.headers():
                self.compute.pause_server(server)
        self.settle(server.id, "pause", lambda s: s.status == "PAUSED")

    def live_migrate(self) -> None:
        server = self.server()
        source, target = server.compute_host, self.param("host")
        if server.status == "ACTIVE" and self.moved(server, target, self.event.host):
            log.info("%s is off %s already: nothing to live-migrate", server.id, self.event.host)
            return
        block = self.param("block_migration")
        # a target host bypasses the scheduler before 2.30 whatever we ask: say so
        force = bool(target) and not os_utils.supports_microversion(self.compute, "2.30")
        with self.headers():
            self.compute.live_migrate_server(
                server, host=target or None, force=force, block_migration=block
            )
        self.settle(
            server.id,
            "live migration",
            lambda s: s.status == "ACTIVE" and self.moved(s, target, source),
        )

    def migrate(self) -> None:
        server = self.server()
        source, target = server.compute_host, self.param("host")
        if server.status == "VERIFY_RESIZE":  # a retry after the move: confirm it
            self.confirm(server)
            return
        if server.status == "ACTIVE" and self.moved(server, target, self.event.host):
            log.info("%s is off %s already: nothing to migrate", server.id, self.event.host)
            return
        with self.headers():
            self.compute.migrate_server(server, host=target or None)
        settled = self.settle(
            server.id,
            "migration",
            lambda s: s.status in ("VERIFY_RESIZE", "ACTIVE") and self.moved(s, target, source),
        )
        if settled.status == "VERIFY_RESIZE":
            self.confirm(settled)

    def resize(self) -> None:
        flavor = self.param("flavor")
        if not flavor or not isinstance(flavor, str):
            raise ActionFailed(f"resize of {self.event.vm} needs a payload flavor (id or name)")
        server = self.server()
        if server.status == "VERIFY_RESIZE":
            self.confirm(server)
            return
        # the flavor's id (what resize takes) and name (what a server shows from 2.47)
        found = self.compute.find_flavor(flavor, ignore_missing=True)
        ref = str(found.id) if found is not None else flavor
        names = {flavor, ref} | ({str(found.name)} if found is not None and found.name else set())
        if server.status == "ACTIVE" and has_flavor(server, names):
            log.info("%s has flavor %s already: nothing to resize", server.id, flavor)
            return
        with self.headers():
            self.compute.resize_server(server, ref)
        settled = self.settle(
            server.id,
            f"resize to {flavor}",
            lambda s: (
                s.status == "VERIFY_RESIZE" or (s.status == "ACTIVE" and has_flavor(s, names))
            ),
        )
        if settled.status == "VERIFY_RESIZE":
            self.confirm(settled)

    def rebuild(self) -> None:
        server = self.server()
        image = self.param("image") or _image_id(server)
        if not image:
            raise ActionFailed(f"rebuild of {server.id}: no payload image and no image to reuse")
        with self.headers():
            self.compute.rebuild_server(server, image)
        self.settle(
            server.id,
            f"rebuild with image {image}",
            lambda s: s.status == "ACTIVE" and _image_id(s) == image,
        )

    def scale_out(self) -> None:
        group = self.event.vm
        name = f"{group}-{uuid.uuid5(NAME_NAMESPACE, self.event.id).hex[:8]}"
        replicas = self.replicas(group)
        # a retry: the server the first try created (simcloud also finds it by that name)
        mine = next((s for s in replicas if s.name == name), None) or self.maybe_server(name)
        if mine is None:
            low_high = bounds(replicas)
            if low_high is not None and len(replicas) >= low_high[1]:
                raise ActionFailed(
                    f"scale_out of {group}: it has {len(replicas)} replicas, its max is "
                    f"{low_high[1]}"
                )
            attrs = self.server_template(group, replicas)
            with self.headers():
                mine = self.compute.create_server(name=name, **attrs)
        self.settle(mine.id, f"scale-out server {name}", lambda s: s.status == "ACTIVE")

    def scale_in(self) -> None:
        group = self.event.vm
        every = self.replicas(group)
        victim = next(
            (s for s in every if (s.metadata or {}).get(SCALE_IN_KEY) == self.event.id), None
        )
        if victim is None:  # not chosen yet (or chosen, and gone already)
            if self.deleted_by_this_event():
                log.info("scale_in %s: its replica is deleted already", self.event.id)
                return
            # settled replicas only: not one being built, nor one another event deletes
            replicas = [s for s in every if s.status != "BUILD" and s.task_state != "deleting"]
            low_high = bounds(replicas)
            if not replicas or (low_high is not None and len(replicas) <= low_high[0]):
                minimum = "" if low_high is None else f", its min is {low_high[0]}"
                raise ActionFailed(f"scale_in of {group}: it has {len(replicas)} replicas{minimum}")
            victim = max(replicas, key=lambda s: (s.created_at or "", s.name or ""))
            self.compute.set_server_metadata(victim, **{SCALE_IN_KEY: self.event.id})
        with self.headers():
            self.compute.delete_server(victim, ignore_missing=True)
        self.settle(victim.id, f"deletion of {victim.name}", None)

    # -- helpers -------------------------------------------------------------------
    def param(self, key: str) -> Any:
        payload = self.event.payload
        if payload.get(key) is not None:
            return payload[key]
        params = payload.get("params")
        return params.get(key) if isinstance(params, Mapping) else None

    @contextmanager
    def headers(self) -> Iterator[None]:
        """The operation and fencing headers on the calls made inside."""
        extra = self.compute.additional_headers
        saved = dict(extra)
        extra[OPERATION_HEADER] = self.event.id
        extra[FENCING_HEADER] = str(self.token)
        try:
            yield
        finally:
            extra.clear()
            extra.update(saved)

    def server(self) -> Server:
        """``event.vm`` by id, else by (unique) name."""
        try:
            return self.compute.get_server(self.event.vm)
        except os_exceptions.NotFoundException:
            found = self.compute.find_server(self.event.vm, ignore_missing=True, all_projects=True)
            if found is None:
                raise ActionFailed(f"no server {self.event.vm}") from None
            return found

    def maybe_server(self, server_id: str) -> Server | None:
        try:
            return self.compute.get_server(server_id)
        except os_exceptions.NotFoundException:
            return None

    def replicas(self, group: str) -> list[Server]:
        return [
            s
            for s in self.compute.servers(details=True, all_projects=True)
            if (s.metadata or {}).get(GROUP_KEY) == group
        ]

    def server_template(self, group: str, replicas: list[Server]) -> dict[str, Any]:
        """create_server's attributes for a new replica of ``group``."""
        newest = max(replicas, key=lambda s: (s.created_at or "", s.name or ""), default=None)
        flavor = self.param("flavor")
        if not flavor and newest is not None:
            flavor = self.flavor_ref(newest)
        image = self.param("image") or (_image_id(newest) if newest is not None else None)
        if not flavor or not image:
            raise ActionFailed(
                f"scale_out of {group}: no payload flavor/image and no replica to copy them from"
            )
        metadata = {GROUP_KEY: group}
        if newest is not None:
            for key in (GROUP_MIN_KEY, GROUP_MAX_KEY):
                value = (newest.metadata or {}).get(key)
                if value is not None:
                    metadata[key] = value
        attrs: dict[str, Any] = {"flavor_id": flavor, "image_id": image, "metadata": metadata}
        networks = self.param("networks")
        if networks is None and os_utils.supports_microversion(self.compute, "2.37"):
            networks = "auto"  # required from 2.37 on: Nova's "get me a network"
        if isinstance(networks, list):
            networks = [{"uuid": n} if isinstance(n, str) else n for n in networks]
        if networks is not None:
            attrs["networks"] = networks
        return attrs

    def flavor_ref(self, server: Server) -> str | None:
        """The id of ``server``'s flavor: given as is before microversion 2.47, after it
        only the flavor's name is, which is looked up."""
        flavor = server.flavor
        if flavor is None:
            return None
        if getattr(flavor, "original_name", None):
            found = self.compute.find_flavor(flavor.original_name, ignore_missing=False)
            return str(found.id)
        return str(flavor.id) if flavor.id else None

    def deleted_by_this_event(self) -> bool:
        """Whether a server this event marked for scale-in is deleted already (Nova
        lists deleted servers to admins: ``deleted=True`` since the event's time)."""
        since = datetime.fromtimestamp(self.event.accepted_at, UTC) - timedelta(minutes=5)
        try:
            deleted = self.compute.servers(
                details=True,
                all_projects=True,
                deleted_only=True,
                changes_since=since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            return any((s.metadata or {}).get(SCALE_IN_KEY) == self.event.id for s in deleted)
        except (os_exceptions.ForbiddenException, os_exceptions.BadRequestException) as exc:
            log.warning("cannot list deleted servers (%s): assuming none was deleted", exc)
            return False

    def confirm(self, server: Server) -> None:
        with self.headers():
            self.compute.confirm_server_resize(server)
        self.settle(
            server.id, "resize confirmation", lambda s: s.status == "ACTIVE", busy={"VERIFY_RESIZE"}
        )

    def settle(
        self,
        server_id: str,
        what: str,
        done: Callable[[Server], bool] | None,
        busy: set[str] | None = None,
    ) -> Server:
        """Polls ``server_id`` until it is settled (no task state, no transitional
        status, nor one of ``busy``); returns it if ``done(server)`` then, raises
        :class:`ActionFailed` if not. ``done`` None: wait for the server to be gone."""
        busy_statuses = TRANSITIONAL | (busy or set())
        while True:
            try:
                server = self.compute.get_server(server_id)
            except os_exceptions.NotFoundException:
                self.late = self.tracker.seen() or self.late
                if done is None:
                    return Server(id=server_id)
                raise ActionFailed(f"{what}: server {server_id} is gone{self.learnt()}") from None
            except TRANSIENT as exc:
                if isinstance(exc, os_exceptions.HttpException) and not _is_5xx(exc):
                    raise
                self.tracker.lost(str(exc), self.hold)
                continue
            late = self.tracker.seen()
            if server.status == "ERROR" and not server.task_state:
                self.late = late or self.late
                raise ActionFailed(
                    f"{what}: server {server_id} is in ERROR{_fault(server)}{self.learnt()}"
                )
            settled = not server.task_state and server.status not in busy_statuses
            if settled:
                self.late = late or self.late
            if settled and done is not None and done(server):
                return server
            if settled:
                raise ActionFailed(
                    f"{what} did not happen: server {server_id} is {server.status} on "
                    f"{server.compute_host}{_fault(server)}{self.learnt()}"
                )
            self.tracker.running(f"{server.status}/{server.task_state}", self.hold)

    def learnt(self) -> str:
        """`` (outcome learnt late: ...)`` if it was, else nothing."""
        return f" ({self.late})" if self.late else ""

    @staticmethod
    def moved(server: Server, target: str | None, source: str | None) -> bool:
        """Whether ``server`` is where a migration should leave it: on ``target`` if one
        is given, else on a host other than ``source``."""
        if target:
            return bool(server.compute_host == target)
        return server.compute_host not in (None, source)


def has_flavor(server: Server, names: set[str]) -> bool:
    """Whether ``server``'s flavor is one of ``names`` (ids and names of one flavor)."""
    current = server.flavor
    if current is None:
        return False
    return any(getattr(current, k, None) in names for k in ("id", "name", "original_name"))


def bounds(replicas: list[Server]) -> tuple[int, int] | None:
    """A group's (min, max) from its replicas' metadata, when they carry them."""
    for server in replicas:
        metadata = server.metadata or {}
        try:
            return int(metadata[GROUP_MIN_KEY]), int(metadata[GROUP_MAX_KEY])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _image_id(server: Server) -> str | None:
    image = server.image
    return str(image.id) if image is not None and image.id else None


def _fault(server: Server) -> str:
    fault = server.fault
    if isinstance(fault, Mapping) and fault.get("message"):
        return f": {fault['message']}"
    return ""


def _is_5xx(exc: os_exceptions.HttpException) -> bool:
    return exc.status_code is not None and int(exc.status_code) >= 500


def _http_detail(exc: os_exceptions.HttpException) -> str:
    return f"{exc.status_code}: {exc.details or exc.message}"
