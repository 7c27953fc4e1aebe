"""One event's action on an OpenStack cloud: the server calls of each action (see the
table in :mod:`scheduler.worker.openstack_driver`), made with the operation and fencing
headers, each followed by a wait for the server to settle
(:class:`~scheduler.worker.openstack_settle.Watch`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from openstack import exceptions as os_exceptions
from openstack import utils as os_utils
from openstack.compute.v2.server import Server
from openstack.connection import Connection

from scheduler.worker.errors import ActionFailed
from scheduler.worker.hold import Hold
from scheduler.worker.openstack_settle import Watch, bounds, has_flavor, image_id
from shared.cloud import (
    FENCING_HEADER,
    GROUP_KEY,
    GROUP_MAX_KEY,
    GROUP_MIN_KEY,
    OPERATION_HEADER,
    SCALE_IN_KEY,
)
from shared.models import Action, VmEventMessage

log = logging.getLogger(__name__)

#: names the scale-out server of an event (uuid5 of the event id in this namespace)
NAME_NAMESPACE = uuid.UUID("9b7c2f0e-5d0a-4c1e-9a57-6f1f5b0c2d11")


class Run(Watch):
    """One execution of one event."""

    def __init__(
        self,
        conn: Connection,
        event: VmEventMessage,
        hold: Hold,
        max_wait: float,
        poll_interval: float,
    ) -> None:
        super().__init__(conn, f"{event.action.value} of {event.vm}", hold, max_wait, poll_interval)
        self.conn = conn
        self.event = event
        self.token = hold.token

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
        # a target host bypasses Nova's scheduler before 2.30 whatever we ask: say so
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
        image = self.param("image") or image_id(server)
        if not image:
            raise ActionFailed(f"rebuild of {server.id}: no payload image and no image to reuse")
        with self.headers():
            self.compute.rebuild_server(server, image)
        self.settle(
            server.id,
            f"rebuild with image {image}",
            lambda s: s.status == "ACTIVE" and image_id(s) == image,
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
        image = self.param("image") or (image_id(newest) if newest is not None else None)
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
