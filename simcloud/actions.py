"""Lifecycle actions: what each checks when it starts (:func:`begin`) and what it does
when its time is up (:func:`finish`). Both return an error message for an action the
cloud's state does not allow (the operation then fails), ``None`` when all is well.

A VM under migrate, live_migrate, resize, update or upgrade is MIGRATING, RESIZING or
UPDATING until the operation ends, and no other operation may start on it meanwhile. A
fault that changes its state (vm_down, host_down...) interrupts the operation: it fails
when it comes due, leaving the VM as the fault left it."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from simcloud.errors import Invalid
from simcloud.inventory import (
    DEFAULT_CPU,
    DEFAULT_FLAVOR,
    DEFAULT_IMAGE,
    DEFAULT_RAM,
    Inventory,
    Obj,
    check_name,
)

VM_ACTIONS = ("heal", "migrate", "live_migrate", "resize", "pause", "stop", "update", "upgrade")
GROUP_ACTIONS = ("scale_out", "scale_in")
ACTIONS = frozenset(VM_ACTIONS + GROUP_ACTIONS)
#: the state a VM is in while the action runs
TRANSIENT = {
    "migrate": "MIGRATING",
    "live_migrate": "MIGRATING",
    "resize": "RESIZING",
    "update": "UPDATING",
    "upgrade": "UPDATING",
}
BUSY = frozenset(TRANSIENT.values())
FLAVORS = ("m1.small", "m1.medium", "m1.large")
MAX_DURATION = 3600.0


@dataclass
class Operation:
    id: str
    action: str
    target: str
    state: str = "running"  # running | succeeded | failed
    error: str | None = None
    started_at: float = 0.0
    done_at: float | None = None
    token: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    #: what the action did: {"host"} for a move, {"vm", "host"} for a scaling...
    result: dict[str, Any] = field(default_factory=dict)
    due_at: float = field(default=0.0, repr=False)
    vm_uid: int = field(default=0, repr=False)
    prior_state: str = field(default="", repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "target": self.target,
            "state": self.state,
            "error": self.error,
            "started_at": self.started_at,
            "done_at": self.done_at,
            "token": self.token,
            "params": dict(self.params),
            "result": dict(self.result),
        }


def duration(params: dict[str, Any], default: float) -> float:
    """``params["duration"]`` (capped at an hour) or ``default``."""
    value = params.get("duration")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise Invalid(f"params.duration must be a number >= 0, not {value!r}")
    return min(float(value), MAX_DURATION)


def check_params(params: dict[str, Any]) -> None:
    for key in ("host", "flavor", "image", "name", "vm"):
        if key in params and not isinstance(params[key], str):
            raise Invalid(f"params.{key} must be a string, not {params[key]!r}")
    if params.get("name"):
        check_name(params["name"], "VM")


def begin(inv: Inventory, op: Operation, rng: random.Random) -> str | None:
    if op.action in GROUP_ACTIONS:
        return _group_check(inv, op, rng)
    vm = inv.vms[op.target]
    op.vm_uid, op.prior_state = inv.uids[op.target], vm["state"]
    host = inv.hosts[vm["host"]]
    if vm["state"] in BUSY:
        return f"VM {op.target} is {vm['state']}: another operation is under way"
    if host["state"] == "DOWN" and op.action not in ("heal", "migrate"):
        return f"VM {op.target}'s host {host['name']} is DOWN: only heal or migrate can act"
    error = _vm_check(inv, op, vm, rng)
    if error is None and op.action in TRANSIENT:
        inv.set_vm(op.target, state=TRANSIENT[op.action])
    return error


def finish(inv: Inventory, op: Operation, rng: random.Random) -> str | None:
    if op.action in GROUP_ACTIONS:
        return _scale(inv, op, rng)
    name, action = op.target, op.action
    vm = inv.vms.get(name)
    if vm is None or inv.uids[name] != op.vm_uid:
        return f"VM {name} was deleted while {action} ran"
    if action == "heal":
        return _heal(inv, op, vm, rng)
    expected = TRANSIENT.get(action, op.prior_state)
    if vm["state"] != expected:
        return f"VM {name} became {vm['state']} while {action} ran"
    if action in ("migrate", "live_migrate"):
        dest, error = _destination(inv, op, vm, rng)
        if dest is None:
            inv.set_vm(name, state=op.prior_state)
            return error
        op.result = {"host": dest}
        inv.set_vm(name, host=dest, state="ACTIVE")
    elif action == "resize":
        flavor, error = _flavor(vm, op.params)
        if flavor is None:
            inv.set_vm(name, state=op.prior_state)
            return error
        op.result = {"flavor": flavor}
        inv.set_vm(name, flavor=flavor, state="ACTIVE")
    elif action in ("update", "upgrade"):
        image = op.params.get("image") or _next_image(vm["image"])
        op.result = {"image": image}
        inv.set_vm(name, image=image, state="ACTIVE")
    else:
        inv.set_vm(name, state={"pause": "PAUSED", "stop": "STOPPED"}[action])
    return None


def _vm_check(inv: Inventory, op: Operation, vm: Obj, rng: random.Random) -> str | None:
    name, action, state = op.target, op.action, vm["state"]
    if action == "heal":
        if inv.hosts[vm["host"]]["state"] == "DOWN" and inv.least_loaded(rng, vm["host"]) is None:
            return f"no UP host to evacuate VM {name} to"
        return None
    if action in ("migrate", "live_migrate"):
        if action == "live_migrate" and state not in ("ACTIVE", "PAUSED"):
            return f"live_migrate needs a running VM: {name} is {state}"
        return _destination(inv, op, vm, rng)[1]
    if action == "pause" and state not in ("ACTIVE", "PAUSED"):
        return f"cannot pause VM {name}: it is {state}"
    if action in ("resize", "update", "upgrade") and state == "DOWN":
        return f"cannot {action} VM {name}: it is DOWN (heal it first)"
    if action == "resize":
        return _flavor(vm, op.params)[1]
    return None


def _heal(inv: Inventory, op: Operation, vm: Obj, rng: random.Random) -> str | None:
    name = op.target
    if inv.hosts[vm["host"]]["state"] == "DOWN":
        dest = inv.least_loaded(rng, vm["host"])
        if dest is None:
            return f"no UP host to evacuate VM {name} to"
        op.result = {"host": dest}
        inv.set_vm(name, host=dest, state="ACTIVE")
    elif vm["state"] in ("DOWN", "STOPPED", "PAUSED"):
        inv.set_vm(name, state="ACTIVE")
    # ACTIVE already, or another operation has it: nothing to heal
    return None


def _destination(
    inv: Inventory, op: Operation, vm: Obj, rng: random.Random
) -> tuple[str | None, str | None]:
    wanted = op.params.get("host")
    if wanted:
        if wanted not in inv.hosts:
            return None, f"no host {wanted}"
        if wanted == vm["host"]:
            return None, f"VM {op.target} is already on host {wanted}"
        if inv.hosts[wanted]["state"] != "UP":
            return None, f"host {wanted} is {inv.hosts[wanted]['state']}, not UP"
        return wanted, None
    dest = inv.least_loaded(rng, vm["host"])
    if dest is None:
        return None, f"no other UP host to move VM {op.target} to"
    return dest, None


def _flavor(vm: Obj, params: dict[str, Any]) -> tuple[str | None, str | None]:
    wanted = params.get("flavor")
    if wanted:
        if wanted not in FLAVORS:
            return None, f"unknown flavor {wanted} (known: {', '.join(FLAVORS)})"
        return wanted, None
    current = vm["flavor"]
    i = FLAVORS.index(current) if current in FLAVORS else -1
    if i == len(FLAVORS) - 1:
        return None, f"VM {vm['name']} has the largest flavor ({current}) already"
    return FLAVORS[i + 1], None


def _next_image(image: str) -> str:
    """``v1`` -> ``v2``: the trailing number bumped (``2`` appended when there is none)."""
    m = re.fullmatch(r"(.*?)(\d+)", image)
    return f"{m.group(1)}{int(m.group(2)) + 1}" if m else f"{image}2"


def _group_check(inv: Inventory, op: Operation, rng: random.Random) -> str | None:
    g, params = op.target, op.params
    group = inv.groups[g]
    count = len(inv.replicas[g])
    if op.action == "scale_out":
        if count >= group["max"]:
            return f"group {g} is at its maximum of {group['max']} replicas"
        if inv.least_loaded(rng) is None:
            return f"no UP host for a new replica of group {g}"
        if params.get("name") and params["name"] in inv.vms:
            return f"VM {params['name']} exists"
        if params.get("flavor") and params["flavor"] not in FLAVORS:
            return f"unknown flavor {params['flavor']} (known: {', '.join(FLAVORS)})"
    elif count <= group["min"]:
        return f"group {g} is at its minimum of {group['min']} replicas"
    elif params.get("vm") and params["vm"] not in inv.replicas[g]:
        return f"VM {params['vm']} is not a replica of group {g}"
    return None


def _scale(inv: Inventory, op: Operation, rng: random.Random) -> str | None:
    """scale_out adds replica ``params["name"]`` (else ``<group>-<n>``, a fresh ``n``)
    on the UP host with the fewest VMs; scale_in removes ``params["vm"]`` (else the
    newest replica). The group's load is spread over its replicas: after scaling, each
    one's cpu is the old total over the new count (at most 1.0)."""
    error = _group_check(inv, op, rng)
    if error is not None:
        return error
    g = op.target
    replicas = inv.replica_objects(g)
    total = math.fsum(v["cpu"] for v in replicas)
    if op.action == "scale_out":
        host = inv.least_loaded(rng)
        assert host is not None  # _group_check saw one
        cpu, ram, flavor, image = DEFAULT_CPU, DEFAULT_RAM, DEFAULT_FLAVOR, DEFAULT_IMAGE
        if replicas:  # like its siblings: the newest one's flavor and image
            cpu = round(total / (len(replicas) + 1), 6)
            ram = round(math.fsum(v["ram"] for v in replicas) / len(replicas), 6)
            flavor, image = replicas[-1]["flavor"], replicas[-1]["image"]
        flavor = op.params.get("flavor") or flavor
        image = op.params.get("image") or image
        name = op.params.get("name") or inv.next_replica_name(g)
        inv.add_vm(name, host, g, cpu=cpu, ram=ram, flavor=flavor, image=image)
        op.result = {"vm": name, "host": host}
    else:
        chosen = op.params.get("vm") or replicas[-1]["name"]
        gone = next(v for v in replicas if v["name"] == chosen)
        replicas.remove(gone)
        inv.delete_vm(chosen)
        cpu = min(1.0, round(total / len(replicas), 6)) if replicas else 0.0
        op.result = {"vm": gone["name"]}
    for vm in replicas:
        inv.set_vm(vm["name"], cpu=cpu)
    return None
