"""The Compute API's routes and their handlers (see :mod:`simcloud.compute`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from shared.cloud import GROUP_KEY
from simcloud.compute.actions import ACTIONS, CONFIRMED, action_params, operation_of, start
from simcloud.compute.errors import Fault, bad_request, conflict, not_found
from simcloud.compute.records import Create, Records, Tracked, iso, now
from simcloud.compute.versions import (
    MIN_VERSION,
    Version,
    requested_version,
    version_document,
    version_headers,
)
from simcloud.compute.views import Views, flavor_view, links
from simcloud.model import Cloud

#: Nova's largest page (osapi_max_limit)
MAX_LIMIT = 1000

Handler = Callable[[Request, Version], Awaitable[Response]]


def compute_router(cloud: Cloud) -> APIRouter:
    """The Compute API over ``cloud``; include it with ``prefix="/compute"``."""
    api = ComputeApi(cloud)
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


class ComputeApi:
    """The handlers: each reads its request, answers from the views, and starts or finds
    again the simcloud operation an action or a create/delete asks for."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.records = Records()
        self.views = Views(cloud, self.records)

    async def serve(self, request: Request, handler: Handler, versioned: bool) -> Response:
        version = MIN_VERSION
        try:
            if versioned:
                version = requested_version(request)
            response = await handler(request, version)
        except Fault as fault:
            response = fault.response()
        if versioned:
            response.headers.update(version_headers(version))
        return response

    # -- versions ------------------------------------------------------------------
    async def versions(self, request: Request, _: Version) -> Response:
        return JSONResponse({"versions": [version_document(request)]})

    async def version(self, request: Request, _: Version) -> Response:
        return JSONResponse({"version": version_document(request)})

    # -- servers -------------------------------------------------------------------
    async def list_servers(self, request: Request, version: Version) -> Response:
        return self._list(request, version, detail=True)

    async def list_servers_brief(self, request: Request, version: Version) -> Response:
        return self._list(request, version, detail=False)

    def _list(self, request: Request, version: Version, *, detail: bool) -> Response:
        query = request.query_params
        limit = _limit(query.get("limit"))
        if _true(query.get("deleted")):
            views = self.views.deleted()
        else:
            views = self.views.servers(request, version)
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
        return JSONResponse({"server": self.views.server_or_404(request, version, name)})

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
        op_id, token = operation_of(request)
        replayed = self.cloud.operation(op_id) is not None
        if not replayed and (name in self.cloud.vms or name in self.records.creates):
            raise conflict(f"a server named {name} exists already")
        op = start(self.cloud, op_id, "scale_out", group, token, {}, refused=403)
        known = self.records.create_ops.get(op_id)
        if known is not None:
            name = known
        elif replayed and op.result.get("vm"):  # this API forgot it: the replica it made
            name = str(op.result["vm"])
        else:
            self.records.create_ops[op_id] = name
            self.records.creates[name] = Create(op_id, name, group, flavor, image, now())
        body = {
            "id": name,
            "links": links(request, name),
            "OS-DCF:diskConfig": "MANUAL",
            "adminPass": "",
        }
        return JSONResponse({"server": body}, status_code=202)

    async def delete_server(self, request: Request, version: Version) -> Response:
        name = request.path_params["server_id"]
        op_id, token = operation_of(request)
        done = self.records.delete_ops.get(op_id)
        if done is not None:  # the same call again
            deleted, its_group = done
            if deleted != name:
                raise conflict(f"operation {op_id} deleted server {deleted}, not {name}")
            start(self.cloud, op_id, "scale_in", its_group, token, {})
            return Response(status_code=204)
        pending = self.records.creates.get(name)
        if pending is not None and self.views.op_state(pending.op_id) == "failed":
            del self.records.creates[name]  # a failed build: nothing to scale in
            return Response(status_code=204)
        vm = self.cloud.vm(self.views.resolve(name))
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
        view = self.views.server(request, version, vm)
        start(self.cloud, op_id, "scale_in", str(group), token, {})
        self.records.tracked[name] = Tracked(op_id, "scale_in", "deleting")
        self.records.delete_ops[op_id] = (name, str(group))
        view.update({"status": "DELETED", "OS-EXT-STS:vm_state": "deleted"})
        view["OS-EXT-STS:task_state"] = None
        view["updated"] = view["OS-SRV-USG:terminated_at"] = iso(self.records.next_moment())
        self.records.deleted[name] = view
        return Response(status_code=204)

    async def action(self, request: Request, version: Version) -> Response:
        name = request.path_params["server_id"]
        body = await _json(request)
        if len(body) != 1:
            raise bad_request("A server action is an object with exactly one key")
        ((kind, args),) = body.items()
        name = self.views.resolve(name)
        if name not in self.cloud.vms:
            raise not_found(f"Instance {name} could not be found.")
        if kind == "confirmResize":
            tracked = self.records.tracked.get(name)
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
            params = action_params(kind, args, version)
        else:
            raise bad_request(f"simcloud does not implement the server action {kind!r}")
        if kind == "evacuate":
            host = self.cloud.hosts.get(str(self.cloud.vms[name]["host"]))
            if host is not None and host["state"] != "DOWN":
                raise conflict(f"Compute service of {host['name']} is still in use.")
        op_id, token = operation_of(request)
        start(self.cloud, op_id, action, name, token, params)
        self.records.tracked[name] = Tracked(op_id, action, task)
        if kind == "rebuild":
            view = self.views.server_or_404(request, version, name)
            return JSONResponse({"server": view}, status_code=202)
        return Response(status_code=202)

    async def set_metadata(self, request: Request, version: Version) -> Response:
        name = self.views.resolve(request.path_params["server_id"])
        if name not in self.cloud.vms:
            raise not_found(f"Instance {name} could not be found.")
        metadata = (await _json(request)).get("metadata")
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise bad_request("Invalid input: 'metadata' is an object of strings")
        self.records.metadata.setdefault(name, {}).update(metadata)
        view = self.views.server_or_404(request, version, name)
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
                    "updated_at": iso(self.records.stamp(f"host:{name}", host), zone=False),
                }
            )
        return JSONResponse({"services": services})

    async def list_flavors(self, request: Request, version: Version) -> Response:
        return JSONResponse({"flavors": [flavor_view(request, f) for f in self.views.flavors()]})

    async def get_flavor(self, request: Request, version: Version) -> Response:
        name = request.path_params["flavor_id"]
        if name not in self.views.flavors():
            raise not_found(f"Flavor {name} could not be found.")
        return JSONResponse({"flavor": flavor_view(request, name)})


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
