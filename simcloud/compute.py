"""simcloud's OpenStack Compute API (Nova v2.1): the smallest subset openstacksdk needs
to discover the API, list and read servers and compute services, and run the server
actions Carousel's OpenStack driver uses -- so the real client code
(:mod:`producer.monitoring.openstack`, :mod:`scheduler.worker.openstack_driver`) runs
against simcloud unchanged. Mounted at ``/compute`` (the endpoint a client is given);
auth is the app's (``X-Auth-Token`` or a bearer token, when simcloud has a token).

Versions. ``GET /compute/`` lists v2.1, ``GET /compute/v2.1/`` describes it:
microversions 2.1 to 2.56 (2.56 is the last one that changes anything implemented
here: ``migrate`` to a given host). A request's microversion (``OpenStack-API-Version:
compute X.Y`` or ``X-OpenStack-Nova-API-Version``; "latest" = 2.56; none = 2.1) is
honoured where it matters -- the embedded flavor from 2.47, ``os-migrateLive``'s body
(2.25, 2.30), ``migrate``'s host (2.56), ``networks`` required on create from 2.37,
service ids as UUIDs from 2.53 -- echoed in the answer, and refused (406) outside it.

Servers. A server is a simcloud VM: id = name = the VM's name; ``status`` ACTIVE,
ERROR (DOWN), PAUSED, SHUTOFF (STOPPED), MIGRATING, RESIZE (RESIZING), REBUILD
(UPDATING); ``OS-EXT-SRV-ATTR:host`` and ``:hypervisor_hostname`` = its host, and
(from 2.16) ``host_status`` its host's state (UP, DOWN, MAINTENANCE);
metadata ``carousel.group`` (and ``carousel.group.min``/``.max``, the group's bounds)
for a group replica; ``created`` and ``updated`` are when this API first saw the VM,
and first saw it as shown (``updated`` changes whenever anything shown changes,
strictly increasing, in microseconds; ``created`` follows the cloud's order of
creation). Lists page as Nova's do (``limit``, ``marker``, ``servers_links``; at most
1000 a page), sorted by id; ``changes-since`` and ``deleted`` filter as Nova's do.

Actions (``POST /compute/v2.1/servers/{id}/action``, 202 as Nova) start a simcloud
operation: ``os-start``, ``reboot`` (any type) and ``unpause`` -> heal (simcloud's one
way back to ACTIVE, which is what each of them ends in; heal of an ACTIVE VM changes
nothing, as a reboot changes no state); ``os-stop`` -> stop; ``pause`` -> pause;
``os-migrateLive`` -> live_migrate (``host`` passed on); ``migrate`` -> migrate;
``resize`` -> resize (``flavorRef``); ``rebuild`` -> update (``imageRef``);
``evacuate`` (only off a DOWN host, else 409 as Nova) -> heal, which moves a VM off a
DOWN host; ``confirmResize`` -> no operation (204). As on Nova, a resized or cold-migrated server
then shows VERIFY_RESIZE until ``confirmResize``. An operation the cloud refuses at
once (a VM busy with another, a stopped VM to pause...) is answered 409 with the
cloud's reason, as Nova answers an action the server's state forbids.

Scaling. ``POST /servers`` with metadata ``carousel.group`` -> scale_out of that group:
simcloud names the new replica (``<group>-<n>``) and copies its flavor and image from
the newest replica, whatever ``flavorRef``/``imageRef`` say; the id answered is the
requested name, which reads as BUILD until the replica exists, then as the replica
(whose id is its simcloud name). ``DELETE /servers/{id}`` of a group's newest replica
-> scale_in of its group (simcloud scales in the newest replica: deleting another is
refused with 409, as is deleting a VM in no group). Nothing else can be created or
deleted. The group's min/max are enforced by the cloud (403 at create, 409 at delete).

While an operation started here runs, its server shows the task state Nova shows for
it (``OS-EXT-STS:task_state``: powering-off, migrating, deleting...), and after one
failed it shows a ``fault`` with the operation's error: what a Nova client watches to
know that an action has ended, and how.

Operation ids and fencing: the ``X-Carousel-Operation`` request header names the
operation (else a new id is drawn): an action repeated with the same id is the same
operation, so a retried call never runs twice; ``X-Carousel-Fencing-Token`` is its
fencing token (0 when absent), and one below a token already seen for the operation is
refused with 409.

Also: ``GET /compute/v2.1/os-services`` (a ``nova-compute`` per host: MAINTENANCE ->
status disabled, DOWN -> state down), flavors (simcloud's, id = name), and
``POST /servers/{id}/metadata`` (extra metadata kept here, beside the cloud). Errors
are Nova's: ``{"itemNotFound": {"message": ..., "code": 404}}``.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from shared.cloud import FENCING_HEADER, GROUP_KEY, GROUP_MAX_KEY, GROUP_MIN_KEY, OPERATION_HEADER
from simcloud.actions import FLAVORS, Operation
from simcloud.errors import CloudError, Conflict, Invalid, NotFound, StaleToken
from simcloud.model import Cloud

#: the microversions this API speaks
MIN_VERSION = (2, 1)
MAX_VERSION = (2, 56)
#: Nova's largest page (osapi_max_limit)
MAX_LIMIT = 1000
PROJECT = "carousel"
VERSION_UPDATED = "2013-07-23T11:33:21Z"

#: simcloud VM state -> (status, vm_state, power_state, task_state)
STATES: dict[str, tuple[str, str, int, str | None]] = {
    "ACTIVE": ("ACTIVE", "active", 1, None),
    "DOWN": ("ERROR", "error", 0, None),
    "PAUSED": ("PAUSED", "paused", 3, None),
    "STOPPED": ("SHUTOFF", "stopped", 4, None),
    "MIGRATING": ("MIGRATING", "active", 1, "migrating"),
    "RESIZING": ("RESIZE", "active", 1, "resize_migrating"),
    "UPDATING": ("REBUILD", "active", 0, "rebuilding"),
}
#: the status Nova shows for a task under way on a running server (else its own)
TASK_STATUS: dict[str, str] = {
    "reboot_started": "REBOOT",
    "reboot_started_hard": "HARD_REBOOT",
    "migrating": "MIGRATING",
    "resize_prep": "RESIZE",
    "rebuilding": "REBUILD",
}
#: server action -> (simcloud action, task state while it runs)
ACTIONS: dict[str, tuple[str, str]] = {
    "os-start": ("heal", "powering-on"),
    "unpause": ("heal", "unpausing"),
    "os-stop": ("stop", "powering-off"),
    "pause": ("pause", "pausing"),
    "os-migrateLive": ("live_migrate", "migrating"),
    "migrate": ("migrate", "resize_prep"),
    "resize": ("resize", "resize_prep"),
    "rebuild": ("update", "rebuilding"),
    "evacuate": ("heal", "rebuilding"),
}
#: actions whose success Nova asks to confirm (VERIFY_RESIZE)
CONFIRMED = frozenset({"migrate", "resize"})

Version = tuple[int, int]
View = dict[str, Any]
Handler = Callable[[Request, Version], Awaitable[Response]]

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Fault(Exception):
    """An error answer, worded as Nova's: ``{kind: {"message", "code"}}``."""

    def __init__(self, code: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.message = message

    def response(self) -> JSONResponse:
        body = {self.kind: {"message": self.message, "code": self.code}}
        return JSONResponse(body, status_code=self.code)


def bad_request(message: str) -> Fault:
    return Fault(400, "badRequest", message)


def not_found(message: str) -> Fault:
    return Fault(404, "itemNotFound", message)


def conflict(message: str) -> Fault:
    return Fault(409, "conflictingRequest", message)


@dataclass
class _Tracked:
    """The latest operation started through this API on one server."""

    op_id: str
    action: str
    task: str
    confirmed: bool = False


@dataclass
class _Create:
    """A server asked for by ``POST /servers``: a scale-out of ``group``."""

    op_id: str
    name: str
    group: str
    flavor: str
    image: str
    created: datetime


@dataclass
class _Stamp:
    fingerprint: str
    at: datetime


@dataclass
class _State:
    """What this API keeps beside the cloud (lost on restart: cosmetic, or found again
    from the operation a retried call names)."""

    tracked: dict[str, _Tracked] = field(default_factory=dict)
    creates: dict[str, _Create] = field(default_factory=dict)  # by requested name
    create_ops: dict[str, str] = field(default_factory=dict)  # op id -> requested name
    #: op id -> (the server it deletes, its group)
    delete_ops: dict[str, tuple[str, str]] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    deleted: dict[str, View] = field(default_factory=dict)  # server -> its last view
    stamps: dict[str, _Stamp] = field(default_factory=dict)
    created: dict[str, datetime] = field(default_factory=dict)
    last_stamp: datetime = _EPOCH


def compute_router(cloud: Cloud) -> APIRouter:
    """The Compute API over ``cloud``; include it with ``prefix="/compute"``."""
    api = _ComputeApi(cloud)
    router = APIRouter()

    def route(path: str, name: str, method: str, handler: Handler, versioned: bool) -> None:
        async def endpoint(request: Request) -> Response:
            return await api.serve(request, handler, versioned)

        router.add_api_route(path, endpoint, methods=[method], name=name, include_in_schema=False)

    route("", "compute_versions_bare", "GET", api.versions, False)
    route("/", "compute_versions", "GET", api.versions, False)
    route("/v2.1", "compute_v21_bare", "GET", api.version, False)
    route("/v2.1/", "compute_v21", "GET", api.version, False)
    route("/v2.1/servers", "compute_servers", "GET", api.list_servers_brief, True)
    route("/v2.1/servers/detail", "compute_servers_detail", "GET", api.list_servers, True)
    route("/v2.1/servers", "compute_create_server", "POST", api.create_server, True)
    route("/v2.1/servers/{server_id}", "compute_server", "GET", api.get_server, True)
    route("/v2.1/servers/{server_id}", "compute_delete", "DELETE", api.delete_server, True)
    route("/v2.1/servers/{server_id}/action", "compute_action", "POST", api.action, True)
    route("/v2.1/servers/{server_id}/metadata", "compute_meta", "POST", api.set_metadata, True)
    route("/v2.1/os-services", "compute_services", "GET", api.list_services, True)
    route("/v2.1/flavors", "compute_flavors", "GET", api.list_flavors, True)
    route("/v2.1/flavors/detail", "compute_flavors_detail", "GET", api.list_flavors, True)
    route("/v2.1/flavors/{flavor_id}", "compute_flavor", "GET", api.get_flavor, True)
    return router


class _ComputeApi:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.state = _State()

    async def serve(self, request: Request, handler: Handler, versioned: bool) -> Response:
        version = MIN_VERSION
        try:
            if versioned:
                version = requested_version(request)
            response = await handler(request, version)
        except Fault as fault:
            response = fault.response()
        if versioned:
            text = _text(version)
            response.headers["OpenStack-API-Version"] = f"compute {text}"
            response.headers["X-OpenStack-Nova-API-Version"] = text
            response.headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        return response

    # -- versions ------------------------------------------------------------------
    async def versions(self, request: Request, _: Version) -> Response:
        return JSONResponse({"versions": [self._version_doc(request)]})

    async def version(self, request: Request, _: Version) -> Response:
        return JSONResponse({"version": self._version_doc(request)})

    def _version_doc(self, request: Request) -> dict[str, Any]:
        media = "application/vnd.openstack.compute+json;version=2.1"
        return {
            "id": "v2.1",
            "status": "CURRENT",
            "version": _text(MAX_VERSION),
            "min_version": _text(MIN_VERSION),
            "updated": VERSION_UPDATED,
            "links": [{"rel": "self", "href": str(request.url_for("compute_v21"))}],
            "media-types": [{"base": "application/json", "type": media}],
        }

    # -- servers -------------------------------------------------------------------
    async def list_servers(self, request: Request, version: Version) -> Response:
        return self._list(request, version, detail=True)

    async def list_servers_brief(self, request: Request, version: Version) -> Response:
        return self._list(request, version, detail=False)

    def _list(self, request: Request, version: Version, *, detail: bool) -> Response:
        query = request.query_params
        limit = _limit(query.get("limit"))
        if _true(query.get("deleted")):
            views = self._deleted_views()
        else:
            views = self._views(request, version)
        since = query.get("changes-since")
        if since is not None:
            threshold = _parse_time(since, "changes-since")
            views = [v for v in views if _parse_time(v["updated"], "updated") >= threshold]
        views.sort(key=lambda v: str(v["id"]))
        marker = query.get("marker")
        if marker is not None:
            ids = [v["id"] for v in views]
            if marker not in ids:
                raise bad_request(f"marker [{marker}] not found")
            views = views[ids.index(marker) + 1 :]
        page = views[:limit]
        if not detail:
            page = [{"id": v["id"], "name": v["name"], "links": v["links"]} for v in page]
        body: dict[str, Any] = {"servers": page}
        if page and len(page) == limit:
            params = {k: v for k, v in query.items() if k not in ("limit", "marker")}
            params.update(limit=str(limit), marker=str(page[-1]["id"]))
            route = "compute_servers_detail" if detail else "compute_servers"
            href = request.url_for(route).include_query_params(**params)
            body["servers_links"] = [{"rel": "next", "href": str(href)}]
        return JSONResponse(body)

    async def get_server(self, request: Request, version: Version) -> Response:
        name = request.path_params["server_id"]
        return JSONResponse({"server": self._view_or_404(request, version, name)})

    async def create_server(self, request: Request, version: Version) -> Response:
        server = (await _json(request)).get("server")
        if not isinstance(server, dict):
            raise bad_request("Invalid input: 'server' is a required object")
        name, flavor, image = server.get("name"), server.get("flavorRef"), server.get("imageRef")
        if not isinstance(name, str) or not name:
            raise bad_request("Invalid input: 'name' is a required string")
        if not isinstance(flavor, str) or not flavor:
            raise bad_request("Invalid input: 'flavorRef' is a required string")
        if not isinstance(image, str) or not image:
            raise bad_request("simcloud boots servers from images only: 'imageRef' is required")
        if version >= (2, 37) and "networks" not in server:
            raise bad_request("Invalid input: 'networks' is a required property")
        metadata = server.get("metadata") or {}
        group = metadata.get(GROUP_KEY) if isinstance(metadata, dict) else None
        if not isinstance(group, str) or group not in self.cloud.groups:
            raise Fault(
                403,
                "forbidden",
                f"simcloud creates servers only as replicas of a group (metadata "
                f"{GROUP_KEY}); {group!r} is no group",
            )
        op_id, token = _operation(request)
        replayed = self.cloud.operation(op_id) is not None
        if not replayed and (name in self.cloud.vms or name in self.state.creates):
            raise conflict(f"a server named {name} exists already")
        op = self._start(op_id, "scale_out", group, token, {}, refused=403)
        known = self.state.create_ops.get(op_id)
        if known is not None:
            name = known
        elif replayed and op.result.get("vm"):  # this API forgot it: the replica it made
            name = str(op.result["vm"])
        else:
            self.state.create_ops[op_id] = name
            self.state.creates[name] = _Create(op_id, name, group, flavor, image, self._now())
        links = self._links(request, name)
        body = {"id": name, "links": links, "OS-DCF:diskConfig": "MANUAL", "adminPass": ""}
        return JSONResponse({"server": body}, status_code=202)

    async def delete_server(self, request: Request, version: Version) -> Response:
        name = request.path_params["server_id"]
        op_id, token = _operation(request)
        done = self.state.delete_ops.get(op_id)
        if done is not None:  # the same call again
            deleted, its_group = done
            if deleted != name:
                raise conflict(f"operation {op_id} deleted server {deleted}, not {name}")
            self._start(op_id, "scale_in", its_group, token, {})
            return Response(status_code=204)
        pending = self.state.creates.get(name)
        if pending is not None and self._op_state(pending.op_id) == "failed":
            del self.state.creates[name]  # a failed build: nothing to scale in
            return Response(status_code=204)
        vm = self.cloud.vm(self._resolve(name))
        if vm is None:
            raise not_found(f"Instance {name} could not be found.")
        name = str(vm["name"])
        group = vm.get("group")
        if not group:
            raise conflict(f"simcloud deletes group replicas only (a scale-in): {name} is in none")
        newest = self.cloud.replicas(str(group))[-1]
        if newest != name:
            raise conflict(
                f"simcloud scales in a group's newest replica: {newest} of {group}, not {name}"
            )
        view = self._view(request, version, vm)
        self._start(op_id, "scale_in", str(group), token, {})
        self.state.tracked[name] = _Tracked(op_id, "scale_in", "deleting")
        self.state.delete_ops[op_id] = (name, str(group))
        view.update({"status": "DELETED", "OS-EXT-STS:vm_state": "deleted"})
        view["OS-EXT-STS:task_state"] = None
        view["updated"] = view["OS-SRV-USG:terminated_at"] = self._iso(self._next_moment())
        self.state.deleted[name] = view
        return Response(status_code=204)

    async def action(self, request: Request, version: Version) -> Response:
        name = request.path_params["server_id"]
        body = await _json(request)
        if len(body) != 1:
            raise bad_request("A server action is an object with exactly one key")
        ((kind, args),) = body.items()
        name = self._resolve(name)
        if name not in self.cloud.vms:
            raise not_found(f"Instance {name} could not be found.")
        if kind == "confirmResize":
            tracked = self.state.tracked.get(name)
            if tracked is not None and tracked.action in CONFIRMED:
                tracked.confirmed = True
            return Response(status_code=204)
        params: dict[str, Any] = {}
        if kind == "reboot":
            reboot_type = args.get("type") if isinstance(args, dict) else None
            if reboot_type not in ("SOFT", "HARD"):
                raise bad_request("Invalid input: the reboot type is SOFT or HARD")
            action = "heal"
            task = "reboot_started_hard" if reboot_type == "HARD" else "reboot_started"
        elif kind in ACTIONS:
            action, task = ACTIONS[kind]
            params = _action_params(kind, args, version)
        else:
            raise bad_request(f"simcloud does not implement the server action {kind!r}")
        if kind == "evacuate":
            host = self.cloud.hosts.get(str(self.cloud.vms[name]["host"]))
            if host is not None and host["state"] != "DOWN":
                raise conflict(f"Compute service of {host['name']} is still in use.")
        op_id, token = _operation(request)
        self._start(op_id, action, name, token, params)
        self.state.tracked[name] = _Tracked(op_id, action, task)
        if kind == "rebuild":
            view = self._view_or_404(request, version, name)
            return JSONResponse({"server": view}, status_code=202)
        return Response(status_code=202)

    async def set_metadata(self, request: Request, version: Version) -> Response:
        name = self._resolve(request.path_params["server_id"])
        if name not in self.cloud.vms:
            raise not_found(f"Instance {name} could not be found.")
        metadata = (await _json(request)).get("metadata")
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise bad_request("Invalid input: 'metadata' is an object of strings")
        self.state.metadata.setdefault(name, {}).update(metadata)
        view = self._view_or_404(request, version, name)
        return JSONResponse({"metadata": view["metadata"]})

    # -- services, flavors ---------------------------------------------------------
    async def list_services(self, request: Request, version: Version) -> Response:
        query = request.query_params
        binary, only = query.get("binary"), query.get("host")
        services = []
        for index, host in enumerate(self.cloud.hosts.values(), start=1):
            name, state = str(host["name"]), str(host["state"])
            if binary not in (None, "nova-compute") or only not in (None, name):
                continue
            service_id: int | str = index
            if version >= (2, 53):
                service_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"simcloud:{name}"))
            services.append(
                {
                    "id": service_id,
                    "binary": "nova-compute",
                    "host": name,
                    "zone": "nova",
                    "status": "disabled" if state == "MAINTENANCE" else "enabled",
                    "state": "down" if state == "DOWN" else "up",
                    "disabled_reason": "maintenance" if state == "MAINTENANCE" else None,
                    "forced_down": False,
                    "updated_at": self._iso(self._stamp(f"host:{name}", host), zone=False),
                }
            )
        return JSONResponse({"services": services})

    async def list_flavors(self, request: Request, version: Version) -> Response:
        return JSONResponse({"flavors": [self._flavor(request, f) for f in self._flavors()]})

    async def get_flavor(self, request: Request, version: Version) -> Response:
        flavor = request.path_params["flavor_id"]
        if flavor not in self._flavors():
            raise not_found(f"Flavor {flavor} could not be found.")
        return JSONResponse({"flavor": self._flavor(request, flavor)})

    def _flavors(self) -> list[str]:
        used = {str(v["flavor"]) for v in self.cloud.vms.values() if v.get("flavor")}
        return sorted(used | set(FLAVORS))

    def _flavor(self, request: Request, flavor: str) -> dict[str, Any]:
        href = str(request.url_for("compute_flavor", flavor_id=flavor))
        return {
            "id": flavor,
            "name": flavor,
            "vcpus": 0,
            "ram": 0,
            "disk": 0,
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "swap": 0,
            "rxtx_factor": 1.0,
            "os-flavor-access:is_public": True,
            "links": [{"rel": "self", "href": href}],
        }

    # -- views ---------------------------------------------------------------------
    def _views(self, request: Request, version: Version) -> list[View]:
        views = [self._view(request, version, vm) for vm in self.cloud.vms.values()]
        for pending in list(self.state.creates.values()):
            if self._op_state(pending.op_id) == "running":
                views.append(self._building(request, version, pending))
        return views

    def _deleted_views(self) -> list[View]:
        return [v for name, v in self.state.deleted.items() if name not in self.cloud.vms]

    def _view_or_404(self, request: Request, version: Version, name: str) -> View:
        vm = self.cloud.vm(self._resolve(name))
        if vm is not None:
            return self._view(request, version, vm)
        pending = self.state.creates.get(name)
        if pending is not None and self._op_state(pending.op_id) in ("running", "failed"):
            return self._building(request, version, pending)
        raise not_found(f"Instance {name} could not be found.")

    def _resolve(self, name: str) -> str:
        """The VM a requested server name became, once its scale-out is done."""
        pending = self.state.creates.get(name)
        if pending is None:
            return name
        op = self.cloud.operation(pending.op_id)
        if op is not None and op.state == "succeeded" and op.result.get("vm"):
            return str(op.result["vm"])
        return name

    def _view(self, request: Request, version: Version, vm: Mapping[str, Any]) -> View:
        name = str(vm["name"])
        status, vm_state, power, task = STATES.get(str(vm["state"]), ("UNKNOWN", "error", 0, None))
        fault: dict[str, Any] | None = None
        tracked = self.state.tracked.get(name)
        op = self.cloud.operation(tracked.op_id) if tracked is not None else None
        if tracked is not None and op is not None:
            if op.state == "running":
                task = tracked.task
                if status != "ERROR":
                    status = TASK_STATUS.get(task, status)
            elif op.state == "failed":
                fault = self._fault(op, tracked.action)
            elif tracked.action in CONFIRMED and not tracked.confirmed and status == "ACTIVE":
                status, vm_state = "VERIFY_RESIZE", "resized"
        host = vm.get("host")
        view: View = {
            "id": name,
            "name": name,
            "status": status,
            "tenant_id": PROJECT,
            "user_id": PROJECT,
            "metadata": self._metadata(name, vm.get("group")),
            "hostId": hashlib.sha224(f"{PROJECT}{host}".encode()).hexdigest() if host else "",
            "image": {"id": str(vm.get("image") or ""), "links": []},
            "flavor": self._embedded_flavor(request, version, str(vm.get("flavor") or "")),
            "addresses": {},
            "accessIPv4": "",
            "accessIPv6": "",
            "links": self._links(request, name),
            "OS-DCF:diskConfig": "MANUAL",
            "progress": 0,
            "OS-EXT-AZ:availability_zone": "nova",
            "config_drive": "",
            "key_name": None,
            "security_groups": [{"name": "default"}],
            "OS-EXT-SRV-ATTR:host": host,
            "OS-EXT-SRV-ATTR:hypervisor_hostname": host,
            "OS-EXT-SRV-ATTR:instance_name": f"instance-{name}",
            "OS-EXT-STS:vm_state": vm_state,
            "OS-EXT-STS:task_state": task,
            "OS-EXT-STS:power_state": power,
            "OS-SRV-USG:terminated_at": None,
            "os-extended-volumes:volumes_attached": [],
        }
        if version >= (2, 16):
            host_obj = self.cloud.hosts.get(str(host)) if host else None
            view["host_status"] = "UNKNOWN" if host_obj is None else str(host_obj["state"])
        if fault is not None:
            view["fault"] = fault
        created = self._created(name)
        view["created"] = self._iso(created)
        view["OS-SRV-USG:launched_at"] = self._iso(created, zone=False)
        view["updated"] = self._iso(self._stamp(name, view))
        return view

    def _building(self, request: Request, version: Version, pending: _Create) -> View:
        op = self.cloud.operation(pending.op_id)
        failed = op is not None and op.state == "failed"
        view: View = {
            "id": pending.name,
            "name": pending.name,
            "status": "ERROR" if failed else "BUILD",
            "tenant_id": PROJECT,
            "user_id": PROJECT,
            "metadata": {GROUP_KEY: pending.group},
            "image": {"id": pending.image, "links": []},
            "flavor": self._embedded_flavor(request, version, pending.flavor),
            "addresses": {},
            "links": self._links(request, pending.name),
            "OS-EXT-SRV-ATTR:host": None,
            "OS-EXT-SRV-ATTR:hypervisor_hostname": None,
            "OS-EXT-STS:vm_state": "error" if failed else "building",
            "OS-EXT-STS:task_state": None if failed else "spawning",
            "OS-EXT-STS:power_state": 0,
            "created": self._iso(pending.created),
        }
        if failed and op is not None:
            view["fault"] = self._fault(op, "scale_out")
        view["updated"] = self._iso(self._stamp(f"build:{pending.name}", view))
        return view

    def _metadata(self, name: str, group: Any) -> dict[str, str]:
        extra = self.state.metadata.get(name, {})
        metadata = {k: v for k, v in extra.items() if not k.startswith(GROUP_KEY)}
        if group:
            metadata[GROUP_KEY] = str(group)
            bounds = self.cloud.groups.get(str(group))
            if bounds is not None:
                metadata[GROUP_MIN_KEY] = str(bounds["min"])
                metadata[GROUP_MAX_KEY] = str(bounds["max"])
        return metadata

    def _embedded_flavor(self, request: Request, version: Version, flavor: str) -> dict[str, Any]:
        if version >= (2, 47):
            return {
                "original_name": flavor,
                "vcpus": 0,
                "ram": 0,
                "disk": 0,
                "ephemeral": 0,
                "swap": 0,
                "extra_specs": {},
            }
        href = str(request.url_for("compute_flavor", flavor_id=flavor or "none"))
        return {"id": flavor, "links": [{"rel": "bookmark", "href": href}]}

    def _links(self, request: Request, name: str) -> list[dict[str, str]]:
        href = str(request.url_for("compute_server", server_id=name))
        return [{"rel": "self", "href": href}, {"rel": "bookmark", "href": href}]

    def _fault(self, op: Operation, action: str) -> dict[str, Any]:
        return {
            "code": 500,
            "message": op.error or f"{action} failed",
            "created": self._iso(self._now()),
        }

    # -- bookkeeping ---------------------------------------------------------------
    def _start(
        self,
        op_id: str,
        action: str,
        target: str,
        token: int,
        params: dict[str, Any],
        refused: int = 409,
    ) -> Operation:
        """Starts (or finds again) the operation; one the cloud refused (or that failed,
        when found again) is an error answer, as Nova refuses an action the server's
        state forbids."""
        try:
            op = self.cloud.start_action(op_id, action, target, token=token, params=params)
        except NotFound as exc:
            raise not_found(str(exc)) from exc
        except StaleToken as exc:
            raise conflict(f"stale fencing token: {exc}") from exc
        except Conflict as exc:
            raise conflict(str(exc)) from exc
        except Invalid as exc:
            raise bad_request(str(exc)) from exc
        except CloudError as exc:
            raise Fault(exc.status, "badRequest", str(exc)) from exc
        if op.state == "failed":
            kind = "forbidden" if refused == 403 else "conflictingRequest"
            raise Fault(refused, kind, f"Cannot {action} {target}: {op.error}")
        return op

    def _op_state(self, op_id: str) -> str | None:
        op = self.cloud.operation(op_id)
        return None if op is None else op.state

    def _created(self, name: str) -> datetime:
        """When this API first saw VM ``name``: VMs first seen together are stamped in
        the cloud's order, which is their order of creation."""
        created = self.state.created.get(name)
        if created is None:
            for vm in self.cloud.vms:
                if vm not in self.state.created:
                    self.state.created[vm] = self._next_moment()
            for gone in set(self.state.created) - set(self.cloud.vms) - {name}:
                del self.state.created[gone]
                self.state.stamps.pop(gone, None)
            created = self.state.created.setdefault(name, self._next_moment())
        return created

    def _stamp(self, key: str, shown: Mapping[str, Any]) -> datetime:
        """When this API first showed ``key`` as ``shown``."""
        fingerprint = json.dumps(
            {k: v for k, v in shown.items() if k not in ("updated", "links")},
            sort_keys=True,
            default=str,
        )
        old = self.state.stamps.get(key)
        if old is not None and old.fingerprint == fingerprint:
            return old.at
        at = self._next_moment()
        self.state.stamps[key] = _Stamp(fingerprint, at)
        return at

    def _next_moment(self) -> datetime:
        """Now, but strictly after every moment handed out before."""
        at = max(self._now(), self.state.last_stamp + timedelta(microseconds=1))
        self.state.last_stamp = at
        return at

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC)

    @staticmethod
    def _iso(moment: datetime, *, zone: bool = True) -> str:
        text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return f"{text}Z" if zone else text


# -- request parsing ------------------------------------------------------------------
def requested_version(request: Request) -> Version:
    """The request's microversion (2.1 when none is asked for); 406 outside the range."""
    text: str | None = None
    for part in (request.headers.get("openstack-api-version") or "").split(","):
        words = part.split()
        if len(words) == 2 and words[0].lower() == "compute":
            text = words[1]
    if text is None:
        text = request.headers.get("x-openstack-nova-api-version")
    if text is None:
        return MIN_VERSION
    if text.strip().lower() == "latest":
        return MAX_VERSION
    match = _VERSION_RE.match(text.strip())
    if match is None:
        raise bad_request(f"Invalid API version request string: {text!r}")
    version = (int(match[1]), int(match[2]))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise Fault(
            406,
            "notAcceptable",
            f"Version {text} is not supported by the API. Minimum is {_text(MIN_VERSION)} "
            f"and maximum is {_text(MAX_VERSION)}.",
        )
    return version


def _operation(request: Request) -> tuple[str, int]:
    op_id = request.headers.get(OPERATION_HEADER) or str(uuid.uuid4())
    raw = request.headers.get(FENCING_HEADER)
    try:
        token = int(raw) if raw else 0
    except ValueError:
        raise bad_request(f"Invalid {FENCING_HEADER}: {raw!r}") from None
    return op_id, token


def _action_params(kind: str, args: Any, version: Version) -> dict[str, Any]:
    """simcloud's params of a server action, its body checked as Nova's would be."""
    body = args if isinstance(args, dict) else {}
    if kind == "os-migrateLive":
        if not isinstance(args, dict) or "host" not in args or "block_migration" not in args:
            raise bad_request("Invalid input: os-migrateLive needs 'host' and 'block_migration'")
        if args["block_migration"] == "auto" and version < (2, 25):
            raise bad_request("Invalid input: block_migration 'auto' needs microversion 2.25")
        if "force" in args and version < (2, 30):
            raise bad_request("Invalid input: 'force' needs microversion 2.30")
        if "disk_over_commit" in args and version >= (2, 25):
            raise bad_request("Invalid input: 'disk_over_commit' is gone since 2.25")
        return _host_param(args.get("host"))
    if kind == "evacuate":
        if version < (2, 14) and "onSharedStorage" not in body:
            raise bad_request("Invalid input: evacuate needs 'onSharedStorage' before 2.14")
        if version >= (2, 14) and "onSharedStorage" in body:
            raise bad_request("Invalid input: 'onSharedStorage' is gone since 2.14")
        return {}
    if kind == "migrate":
        if body.get("host") and version < (2, 56):
            raise bad_request("Invalid input: migrate to a given host needs microversion 2.56")
        return _host_param(body.get("host"))
    if kind in ("resize", "rebuild"):
        key, param = ("flavorRef", "flavor") if kind == "resize" else ("imageRef", "image")
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise bad_request(f"Invalid input: {kind} needs '{key}'")
        return {param: value}
    return {}


def _host_param(host: Any) -> dict[str, Any]:
    if host is None:
        return {}
    if not isinstance(host, str) or not host:
        raise bad_request(f"Invalid input: bad host {host!r}")
    return {"host": host}


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("Malformed request body") from None
    if not isinstance(body, dict):
        raise bad_request("Malformed request body: not an object")
    return body


def _limit(raw: str | None) -> int:
    if raw is None:
        return MAX_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise bad_request(f"Invalid limit {raw!r}") from None
    if limit < 0:
        raise bad_request(f"Invalid limit {raw!r}")
    return min(limit, MAX_LIMIT)


def _true(raw: str | None) -> bool:
    return raw is not None and raw.lower() in ("1", "true", "yes", "on")


def _parse_time(text: str, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(f"Invalid {what} value {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(version: Version) -> str:
    return f"{version[0]}.{version[1]}"
