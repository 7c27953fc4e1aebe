"""The cloud's objects (hosts, VMs, groups) as their JSON dicts, the indexes that keep
placement cheap, and the one place where an object changes: every change bumps the
resource version, stamps the object with it and appends an entry to the change log."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from simcloud.changelog import Change, ChangeLog
from simcloud.errors import Conflict, Invalid, NotFound

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
HOST_STATES = frozenset({"UP", "DOWN", "MAINTENANCE"})
VM_STATES = frozenset({"ACTIVE", "DOWN", "PAUSED", "STOPPED", "MIGRATING", "RESIZING", "UPDATING"})
DEFAULT_CPU = 0.3
DEFAULT_RAM = 0.4
DEFAULT_FLAVOR = "m1.small"
DEFAULT_IMAGE = "v1"

Obj = dict[str, Any]


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise Invalid(f"bad {what} name {name!r}: must match {NAME_RE.pattern}")
    return name


def check_fraction(value: float | None, what: str) -> None:
    if value is not None and not 0.0 <= value <= 1.0:  # NaN fails too
        raise Invalid(f"{what} must be within 0..1, not {value!r}")


@dataclass(frozen=True)
class GroupSpec:
    name: str
    replicas: int
    min: int
    max: int

    @classmethod
    def parse(cls, text: str) -> GroupSpec:
        """``name:replicas:min:max``, e.g. ``web:3:1:5``."""
        try:
            name, replicas, lo, hi = text.split(":")
            return cls(name, int(replicas), int(lo), int(hi))
        except ValueError:
            raise Invalid(f"bad group {text!r}: want name:replicas:min:max") from None


class Inventory:
    def __init__(self, log_size: int) -> None:
        self.rv = 0
        self.log = ChangeLog(log_size)
        self.hosts: dict[str, Obj] = {}
        self.vms: dict[str, Obj] = {}
        self.groups: dict[str, Obj] = {}
        #: host -> names of its VMs (a dict as an ordered set)
        self.on_host: dict[str, dict[str, None]] = {}
        #: group -> names of its replicas, oldest first
        self.replicas: dict[str, dict[str, None]] = {}
        #: VM -> incarnation: a VM deleted and added again under its name is another VM
        self.uids: dict[str, int] = {}
        self._next_uid = 0
        self._replica_seq: dict[str, int] = {}

    # --- lookups

    def need_vm(self, name: str) -> Obj:
        return _need(self.vms, name, "VM")

    def need_host(self, name: str) -> Obj:
        return _need(self.hosts, name, "host")

    def need_group(self, name: str) -> Obj:
        return _need(self.groups, name, "group")

    # --- the change log

    def _record(self, kind: str, obj: Obj) -> None:
        self.rv += 1
        obj["version"] = self.rv
        self.log.append({"kind": kind, "type": "upsert", "object": dict(obj), "version": self.rv})

    def _record_delete(self, kind: str, name: str) -> None:
        self.rv += 1
        self.log.append(
            {"kind": kind, "type": "delete", "object": {"name": name}, "version": self.rv}
        )

    # --- hosts and groups

    def add_host(self, name: str) -> Obj:
        check_name(name, "host")
        if name in self.hosts:
            raise Conflict(f"host {name} exists")
        host: Obj = {"name": name, "state": "UP", "version": 0}
        self.hosts[name] = host
        self.on_host[name] = {}
        self._record("host", host)
        return host

    def set_host(self, name: str, state: str) -> bool:
        host = self.hosts[name]
        if host["state"] == state:
            return False
        host["state"] = state
        self._record("host", host)
        return True

    def add_group(self, name: str, min_: int, max_: int) -> Obj:
        check_name(name, "group")
        if name in self.groups:
            raise Conflict(f"group {name} exists")
        if not 0 <= min_ <= max_ or max_ < 1:
            raise Invalid(f"group {name}: need 0 <= min <= max and max >= 1, not {min_}..{max_}")
        group: Obj = {"name": name, "min": min_, "max": max_, "version": 0}
        self.groups[name] = group
        self.replicas[name] = {}
        self._replica_seq[name] = 0
        self._record("group", group)
        return group

    def next_replica_name(self, group: str) -> str:
        """``<group>-<n>`` with an ``n`` never used before in the group and free."""
        while True:
            self._replica_seq[group] += 1
            name = f"{group}-{self._replica_seq[group]}"
            if name not in self.vms:
                return name

    # --- VMs

    def add_vm(
        self,
        name: str,
        host: str,
        group: str | None = None,
        *,
        cpu: float = DEFAULT_CPU,
        ram: float = DEFAULT_RAM,
        flavor: str = DEFAULT_FLAVOR,
        image: str = DEFAULT_IMAGE,
    ) -> Obj:
        check_name(name, "VM")
        if name in self.vms:
            raise Conflict(f"VM {name} exists")
        if host not in self.hosts:
            raise NotFound(f"no host {host}")
        if group is not None and group not in self.groups:
            raise NotFound(f"no group {group}")
        check_fraction(cpu, "cpu")
        check_fraction(ram, "ram")
        state = "DOWN" if self.hosts[host]["state"] == "DOWN" else "ACTIVE"
        vm: Obj = {
            "name": name,
            "host": host,
            "state": state,
            "cpu": cpu,
            "ram": ram,
            "group": group,
            "flavor": flavor,
            "image": image,
            "version": 0,
        }
        self.vms[name] = vm
        self.on_host[host][name] = None
        if group is not None:
            self.replicas[group][name] = None
        self._next_uid += 1
        self.uids[name] = self._next_uid
        self._record("vm", vm)
        return vm

    def set_vm(self, name: str, **fields: Any) -> bool:
        """Sets ``fields`` of VM ``name``; only a real change is recorded."""
        vm = self.vms[name]
        changed = {k: v for k, v in fields.items() if vm[k] != v}
        if not changed:
            return False
        if "host" in changed:
            del self.on_host[vm["host"]][name]
            self.on_host[changed["host"]][name] = None
        vm.update(changed)
        self._record("vm", vm)
        return True

    def delete_vm(self, name: str) -> Obj:
        vm = self.vms.pop(name, None)
        if vm is None:
            raise NotFound(f"no VM {name}")
        del self.on_host[vm["host"]][name]
        if vm["group"] is not None:
            del self.replicas[vm["group"]][name]
        del self.uids[name]
        self._record_delete("vm", name)
        return vm

    # --- placement

    def least_loaded(self, rng: random.Random, exclude: str | None = None) -> str | None:
        """The UP host (not ``exclude``) with the fewest VMs, ties broken by ``rng``."""
        best: list[str] = []
        fewest = -1
        for name, host in self.hosts.items():
            if host["state"] != "UP" or name == exclude:
                continue
            count = len(self.on_host[name])
            if not best or count < fewest:
                best, fewest = [name], count
            elif count == fewest:
                best.append(name)
        return rng.choice(best) if best else None

    def replica_objects(self, group: str) -> list[Obj]:
        return [self.vms[n] for n in self.replicas[group]]

    def snapshot(self) -> dict[str, Any]:
        return {
            "resource_version": self.rv,
            "hosts": [dict(h) for h in self.hosts.values()],
            "vms": [dict(v) for v in self.vms.values()],
            "groups": [dict(g) for g in self.groups.values()],
        }

    def changes_since(self, rv: int, limit: int | None = None) -> list[Change] | None:
        return self.log.since(rv, self.rv, limit)


def _need(objects: dict[str, Obj], name: str, kind: str) -> Obj:
    obj = objects.get(name)
    if obj is None:
        raise NotFound(f"no {kind} {name}")
    return obj


def readonly(objects: dict[str, Obj]) -> Mapping[str, Mapping[str, Any]]:
    """A read-only view of ``objects`` (its dicts are the live objects: do not change)."""
    return MappingProxyType(objects)
