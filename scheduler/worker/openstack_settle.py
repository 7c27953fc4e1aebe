"""Waiting for a server to settle after an action call: the OpenStack driver's poll of
the server's record (see :mod:`scheduler.worker.openstack_driver` for when a server is
"settled"), and what it reads from a server."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import requests
from keystoneauth1 import exceptions as ksa_exceptions
from openstack import exceptions as os_exceptions
from openstack.compute.v2.server import Server
from openstack.connection import Connection

from scheduler.worker.errors import ActionFailed
from scheduler.worker.hold import Hold
from scheduler.worker.tracking import Tracker
from shared.cloud import GROUP_MAX_KEY, GROUP_MIN_KEY

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


class Watch:
    """The servers of one event's action, polled until settled: a poll that fails is
    waited out (:mod:`scheduler.worker.tracking`), a success learnt late is noted."""

    def __init__(
        self, conn: Connection, what: str, hold: Hold, max_wait: float, poll_interval: float
    ) -> None:
        self.compute = conn.compute
        self.hold = hold
        self.tracker = Tracker(what, poll_interval, max_wait)
        #: the note of a success learnt late (the cloud could not be asked for a while)
        self.late: str | None = None

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


def image_id(server: Server) -> str | None:
    image = server.image
    return str(image.id) if image is not None and image.id else None


def _fault(server: Server) -> str:
    fault = server.fault
    if isinstance(fault, Mapping) and fault.get("message"):
        return f": {fault['message']}"
    return ""


def _is_5xx(exc: os_exceptions.HttpException) -> bool:
    return exc.status_code is not None and int(exc.status_code) >= 500
