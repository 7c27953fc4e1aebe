"""simcloud's model: a small cloud of hosts, VMs and groups (microservices whose replicas
are VMs), lifecycle actions that take time, and injectable faults.

Pure and single-threaded: no I/O, time only through the injected ``clock``, randomness
only from a ``random.Random(seed)``. Whatever is due by ``clock()`` (an operation's
effect, the end of a flap or of an API fault) happens when :meth:`Cloud.tick` is called.
Every change of an object bumps the resource version and is appended to the change log;
setting something to the value it has changes nothing and bumps nothing."""

from __future__ import annotations

import heapq
import itertools
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from simcloud import actions
from simcloud.actions import ACTIONS, GROUP_ACTIONS, Operation
from simcloud.changelog import Change
from simcloud.errors import CloudError, Conflict, Invalid, NotFound, StaleToken
from simcloud.faults import ApiFaults
from simcloud.inventory import GroupSpec, Inventory, Obj, check_fraction, readonly

__all__ = [
    "ACTIONS",
    "Cloud",
    "CloudError",
    "Conflict",
    "GroupSpec",
    "Invalid",
    "NotFound",
    "Operation",
    "StaleToken",
]

MAX_OP_ID = 256


class Cloud:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        action_seconds: float = 1.0,
        per_action_seconds: dict[str, float] | None = None,
        log_size: int = 100_000,
        seed: int = 0,
        ops_size: int = 100_000,
        incarnation: str | None = None,
    ) -> None:
        per_action = dict(per_action_seconds or {})
        if unknown := set(per_action) - ACTIONS:
            raise Invalid(f"unknown actions {sorted(unknown)}")
        if any(not s >= 0 for s in [action_seconds, *per_action.values()]):
            raise Invalid("action durations must be >= 0")
        self.clock = clock
        #: this cloud's identity: a restarted simcloud starts its versions again, and a
        #: client tells it from the one before by this (not part of the simulation, so not
        #: drawn from the seeded random)
        self.incarnation = incarnation or uuid.uuid4().hex
        self.action_seconds = action_seconds
        self.per_action_seconds = per_action
        self._inv = Inventory(log_size)
        self._rng = random.Random(seed)
        self._api = ApiFaults(random.Random(seed + 1))
        self._ops: dict[str, Operation] = {}
        self._finished: deque[str] = deque()  # finished operations, oldest first
        self._ops_size = ops_size
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._flaps: dict[str, int] = {}  # VM -> its latest flap's number
        self._rr = 0  # round-robin placement of seeded replicas

    # --- inventory

    def seed_inventory(
        self, hosts: int, vms_per_host: int, groups: Sequence[GroupSpec] = (), prefix: str = "h"
    ) -> None:
        """Hosts ``<prefix>1..N``, VMs ``<host>-vm1..M`` on each, then each group's
        replicas ``<group>-1..R`` round-robin over the hosts."""
        for h in range(1, hosts + 1):
            host = f"{prefix}{h}"
            self.add_host(host)
            for v in range(1, vms_per_host + 1):
                self.add_vm(f"{host}-vm{v}", host)
        for spec in groups:
            self.add_group(spec.name, spec.min, spec.max, spec.replicas)

    def add_host(self, name: str) -> dict[str, Any]:
        return dict(self._inv.add_host(name))

    def add_vm(self, name: str, host: str, group: str | None = None) -> dict[str, Any]:
        return dict(self._inv.add_vm(name, host, group))

    def delete_vm(self, name: str) -> None:
        self._inv.delete_vm(name)

    def add_group(self, name: str, min: int, max: int, replicas: int = 0) -> dict[str, Any]:
        """A group and its ``replicas`` (``min <= replicas <= max``), placed round-robin
        over the UP hosts."""
        if not min <= replicas <= max:
            raise Invalid(f"group {name}: {replicas} replicas is outside {min}..{max}")
        up = [h for h, obj in self._inv.hosts.items() if obj["state"] == "UP"]
        if replicas and not up:
            raise Invalid(f"group {name}: no UP host for its replicas")
        group = dict(self._inv.add_group(name, min, max))
        for _ in range(replicas):
            self._inv.add_vm(self._inv.next_replica_name(name), up[self._rr % len(up)], name)
            self._rr += 1
        return group

    # --- reading

    @property
    def resource_version(self) -> int:
        return self._inv.rv

    @property
    def hosts(self) -> Mapping[str, Mapping[str, Any]]:
        return readonly(self._inv.hosts)

    @property
    def vms(self) -> Mapping[str, Mapping[str, Any]]:
        return readonly(self._inv.vms)

    @property
    def groups(self) -> Mapping[str, Mapping[str, Any]]:
        return readonly(self._inv.groups)

    def vm(self, name: str) -> dict[str, Any] | None:
        return _copy(self._inv.vms.get(name))

    def host(self, name: str) -> dict[str, Any] | None:
        return _copy(self._inv.hosts.get(name))

    def group(self, name: str) -> dict[str, Any] | None:
        return _copy(self._inv.groups.get(name))

    def replicas(self, group: str) -> list[str]:
        """The group's replicas, oldest first."""
        return list(self._inv.replicas.get(group, ()))

    def snapshot(self) -> dict[str, Any]:
        """``{"incarnation", "resource_version", "hosts", "vms", "groups"}``: copies, safe
        to keep."""
        return {"incarnation": self.incarnation, **self._inv.snapshot()}

    def changes_since(self, rv: int, limit: int | None = None) -> list[Change] | None:
        """The change log's entries with version > ``rv``, oldest first (at most
        ``limit``); ``None`` when the log no longer has them all (relist). Entries are
        shared: do not change them."""
        return self._inv.changes_since(rv, limit)

    # --- actions

    def start_action(
        self,
        op_id: str,
        action: str,
        target: str,
        token: int = 0,
        params: dict[str, Any] | None = None,
    ) -> Operation:
        """Starts ``action`` on ``target`` (a VM; a group for scale_out/scale_in) as
        operation ``op_id``, or returns the operation already under that id."""
        if not isinstance(op_id, str) or not 0 < len(op_id) <= MAX_OP_ID:
            raise Invalid(f"an operation id is 1..{MAX_OP_ID} characters")
        existing = self._ops.get(op_id)
        if existing is not None:
            if token < existing.token:
                raise StaleToken(f"operation {op_id}: token {token} < {existing.token}")
            if (existing.action, existing.target) != (action, target):
                raise Conflict(
                    f"operation {op_id} is {existing.action} on {existing.target}, "
                    f"not {action} on {target}"
                )
            existing.token = token
            return existing
        if action not in ACTIONS:
            raise Invalid(f"unknown action {action!r}")
        params = dict(params or {})
        actions.check_params(params)
        seconds = actions.duration(params, self.per_action_seconds.get(action, self.action_seconds))
        objects: Mapping[str, Obj] = self._inv.groups if action in GROUP_ACTIONS else self._inv.vms
        if target not in objects:
            kind = "group" if action in GROUP_ACTIONS else "VM"
            raise NotFound(f"no {kind} {target}")
        now = self.clock()
        op = Operation(op_id, action, target, started_at=now, token=token, params=params)
        op.due_at = now + seconds
        self._ops[op_id] = op
        error = actions.begin(self._inv, op, self._rng)
        if error is not None:
            self._end(op, error)
        else:
            self._at(op.due_at, lambda: self._complete(op))
        return op

    def operation(self, op_id: str) -> Operation | None:
        return self._ops.get(op_id)

    def operations(self) -> list[Operation]:
        """Every operation the cloud keeps (those running, and the finished ones within
        its bound), in the order they started."""
        return list(self._ops.values())

    def _complete(self, op: Operation) -> None:
        self._end(op, actions.finish(self._inv, op, self._rng))

    def _end(self, op: Operation, error: str | None) -> None:
        op.state = "failed" if error else "succeeded"
        op.error = error
        op.done_at = self.clock()
        self._finished.append(op.id)
        while len(self._finished) > self._ops_size:
            del self._ops[self._finished.popleft()]

    # --- time

    def _at(self, due: float, fire: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (due, next(self._seq), fire))

    def tick(self) -> None:
        """Applies everything due by ``clock()``, in the order it fell due."""
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            heapq.heappop(self._timers)[2]()
        self._api.expire(now)

    # --- faults on objects

    def vm_down(self, vm: str) -> bool:
        self._inv.need_vm(vm)
        return self._inv.set_vm(vm, state="DOWN")

    def vm_up(self, vm: str) -> bool:
        """The VM ACTIVE, whatever its state (an operation running on it fails)."""
        obj = self._inv.need_vm(vm)
        if self._inv.hosts[obj["host"]]["state"] == "DOWN":
            raise Conflict(f"VM {vm}'s host {obj['host']} is DOWN")
        return self._inv.set_vm(vm, state="ACTIVE")

    def host_down(self, host: str) -> bool:
        """The host DOWN and every VM on it DOWN."""
        self._inv.need_host(host)
        changed = self._inv.set_host(host, "DOWN")
        for vm in list(self._inv.on_host[host]):
            changed |= self._inv.set_vm(vm, state="DOWN")
        return changed

    def host_up(self, host: str) -> bool:
        """The host UP; its VMs stay as they are (DOWN ones need a heal)."""
        self._inv.need_host(host)
        return self._inv.set_host(host, "UP")

    def host_maintenance(self, host: str) -> bool:
        """The host MAINTENANCE: nothing new is placed on it; its VMs keep running."""
        self._inv.need_host(host)
        return self._inv.set_host(host, "MAINTENANCE")

    def set_utilisation(
        self,
        vm: str | None = None,
        group: str | None = None,
        cpu: float | None = None,
        ram: float | None = None,
    ) -> bool:
        """cpu and/or ram (0..1) of one VM or of every replica of a group."""
        if (vm is None) == (group is None):
            raise Invalid("name a vm or a group")
        check_fraction(cpu, "cpu")
        check_fraction(ram, "ram")
        if vm is not None:
            names = [self._inv.need_vm(vm)["name"]]
        else:
            assert group is not None
            names = list(self._inv.replicas[self._inv.need_group(group)["name"]])
        fields = {k: v for k, v in (("cpu", cpu), ("ram", ram)) if v is not None}
        changed = False
        for name in names:
            changed |= self._inv.set_vm(name, **fields)
        return changed

    def flap(self, vm: str, down_for: float) -> None:
        """The VM DOWN now and ACTIVE again ``down_for`` seconds later (unless it is no
        longer DOWN then, was replaced, its host is DOWN, or a later flap took over)."""
        if not 0 <= down_for <= actions.MAX_DURATION:
            raise Invalid(f"down_for must be within 0..{actions.MAX_DURATION:g} s")
        self._inv.need_vm(vm)
        number = next(self._seq)
        uid = self._inv.uids[vm]
        self._flaps[vm] = number
        self._inv.set_vm(vm, state="DOWN")

        def end() -> None:
            if self._flaps.get(vm) != number:
                return
            del self._flaps[vm]
            obj = self._inv.vms.get(vm)
            if obj is None or self._inv.uids[vm] != uid or obj["state"] != "DOWN":
                return
            if self._inv.hosts[obj["host"]]["state"] != "DOWN":
                self._inv.set_vm(vm, state="ACTIVE")

        self._at(self.clock() + down_for, end)

    # --- faults of the API

    def api_fault(
        self, delay: float = 0, fail_rate: float = 0, duration: float | None = None
    ) -> None:
        """Every API call (but /faults and /healthz) delayed by ``delay`` s and failed
        (503) at ``fail_rate``, for ``duration`` s or until cleared."""
        self._api.set_api(self.clock(), delay, fail_rate, duration)

    def stream_cut(self, seconds: float) -> None:
        """The change stream (watch) refused for ``seconds``."""
        self._api.set_stream_cut(self.clock(), seconds)

    def clear_faults(self) -> None:
        """Ends the API faults and the stream cut (flaps run their course)."""
        self._api.clear()

    def api_fault_check(self) -> tuple[float, bool]:
        """For one API call now: the delay to impose and whether to fail it."""
        return self._api.decide(self.clock())

    def stream_cut_active(self) -> bool:
        return self._api.stream_cut(self.clock())

    def faults(self) -> dict[str, Any]:
        """The API faults in force and the number of flaps under way."""
        return {**self._api.status(self.clock()), "flaps": len(self._flaps)}


def _copy(obj: Obj | None) -> dict[str, Any] | None:
    return None if obj is None else dict(obj)
