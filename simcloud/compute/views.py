"""What the Compute API shows: a simcloud VM as a Nova server (its status, task state
and fault from the operation last started on it), a server asked for and still building,
a deleted one, and flavors, each as the request's microversion shapes it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from fastapi import Request

from shared.cloud import GROUP_KEY, GROUP_MAX_KEY, GROUP_MIN_KEY
from simcloud.actions import FLAVORS, Operation
from simcloud.compute.actions import CONFIRMED
from simcloud.compute.errors import not_found
from simcloud.compute.records import Create, Records, View, iso, now
from simcloud.compute.versions import Version
from simcloud.model import Cloud

PROJECT = "carousel"

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


class Views:
    """The servers and flavors of ``cloud`` as Nova shows them, with what ``records``
    remembers of the operations started through the API."""

    def __init__(self, cloud: Cloud, records: Records) -> None:
        self.cloud = cloud
        self.records = records

    # -- servers -------------------------------------------------------------------
    def servers(self, request: Request, version: Version) -> list[View]:
        """Every server: the cloud's VMs, and the ones still building."""
        views = [self.server(request, version, vm) for vm in self.cloud.vms.values()]
        for pending in list(self.records.creates.values()):
            if self.op_state(pending.op_id) == "running":
                views.append(self.building(request, version, pending))
        return views

    def deleted(self) -> list[View]:
        return [v for name, v in self.records.deleted.items() if name not in self.cloud.vms]

    def server_or_404(self, request: Request, version: Version, name: str) -> View:
        vm = self.cloud.vm(self.resolve(name))
        if vm is not None:
            return self.server(request, version, vm)
        pending = self.records.creates.get(name)
        if pending is not None and self.op_state(pending.op_id) in ("running", "failed"):
            return self.building(request, version, pending)
        raise not_found(f"Instance {name} could not be found.")

    def resolve(self, name: str) -> str:
        """The VM a requested server name became, once its scale-out is done."""
        pending = self.records.creates.get(name)
        if pending is None:
            return name
        op = self.cloud.operation(pending.op_id)
        if op is not None and op.state == "succeeded" and op.result.get("vm"):
            return str(op.result["vm"])
        return name

    def op_state(self, op_id: str) -> str | None:
        op = self.cloud.operation(op_id)
        return None if op is None else op.state

    def server(self, request: Request, version: Version, vm: Mapping[str, Any]) -> View:
        name = str(vm["name"])
        status, vm_state, power, task = STATES.get(str(vm["state"]), ("UNKNOWN", "error", 0, None))
        fault: dict[str, Any] | None = None
        tracked = self.records.tracked.get(name)
        op = self.cloud.operation(tracked.op_id) if tracked is not None else None
        if tracked is not None and op is not None:
            if op.state == "running":
                task = tracked.task
                if status != "ERROR":
                    status = TASK_STATUS.get(task, status)
            elif op.state == "failed":
                fault = _fault(op, tracked.action)
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
            "flavor": embedded_flavor(request, version, str(vm.get("flavor") or "")),
            "addresses": {},
            "accessIPv4": "",
            "accessIPv6": "",
            "links": links(request, name),
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
        created = self.records.created_at(name, self.cloud.vms)
        view["created"] = iso(created)
        view["OS-SRV-USG:launched_at"] = iso(created, zone=False)
        view["updated"] = iso(self.records.stamp(name, view))
        return view

    def building(self, request: Request, version: Version, pending: Create) -> View:
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
            "flavor": embedded_flavor(request, version, pending.flavor),
            "addresses": {},
            "links": links(request, pending.name),
            "OS-EXT-SRV-ATTR:host": None,
            "OS-EXT-SRV-ATTR:hypervisor_hostname": None,
            "OS-EXT-STS:vm_state": "error" if failed else "building",
            "OS-EXT-STS:task_state": None if failed else "spawning",
            "OS-EXT-STS:power_state": 0,
            "created": iso(pending.created),
        }
        if failed and op is not None:
            view["fault"] = _fault(op, "scale_out")
        view["updated"] = iso(self.records.stamp(f"build:{pending.name}", view))
        return view

    def _metadata(self, name: str, group: Any) -> dict[str, str]:
        extra = self.records.metadata.get(name, {})
        metadata = {k: v for k, v in extra.items() if not k.startswith(GROUP_KEY)}
        if group:
            metadata[GROUP_KEY] = str(group)
            bounds = self.cloud.groups.get(str(group))
            if bounds is not None:
                metadata[GROUP_MIN_KEY] = str(bounds["min"])
                metadata[GROUP_MAX_KEY] = str(bounds["max"])
        return metadata

    # -- flavors -------------------------------------------------------------------
    def flavors(self) -> list[str]:
        used = {str(v["flavor"]) for v in self.cloud.vms.values() if v.get("flavor")}
        return sorted(used | set(FLAVORS))


def flavor_view(request: Request, name: str) -> dict[str, Any]:
    href = str(request.url_for("compute_flavor", flavor_id=name))
    return {
        "id": name,
        "name": name,
        "vcpus": 0,
        "ram": 0,
        "disk": 0,
        "OS-FLV-EXT-DATA:ephemeral": 0,
        "swap": 0,
        "rxtx_factor": 1.0,
        "os-flavor-access:is_public": True,
        "links": [{"rel": "self", "href": href}],
    }


def embedded_flavor(request: Request, version: Version, flavor: str) -> dict[str, Any]:
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


def links(request: Request, name: str) -> list[dict[str, str]]:
    href = str(request.url_for("compute_server", server_id=name))
    return [{"rel": "self", "href": href}, {"rel": "bookmark", "href": href}]


def _fault(op: Operation, action: str) -> dict[str, Any]:
    return {"code": 500, "message": op.error or f"{action} failed", "created": iso(now())}
