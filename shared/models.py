"""Wire models that two services must agree on.

REST schemas live in ``producer/schemas.py``; these are what travels over AMQP and what
the ledger (:mod:`shared.store`) hands out.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.names import Name
from shared.priority import Priority


class Action(StrEnum):
    HEAL = "heal"
    SCALE_OUT = "scale_out"
    SCALE_IN = "scale_in"
    MIGRATE = "migrate"
    LIVE_MIGRATE = "live_migrate"
    RESIZE = "resize"
    PAUSE = "pause"
    STOP = "stop"
    UPDATE = "update"
    UPGRADE = "upgrade"


class Status(StrEnum):
    #: Stored, not yet confirmed by the broker. Internal: never shown by the REST API.
    PENDING = "pending"
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: cancelled before it was dispatched (``DELETE /events/{id}``): never runs
    CANCELLED = "cancelled"


#: not yet handed to a worker: the dispatcher may dispatch these, and a cancel may end them
UNDISPATCHED = frozenset({Status.PENDING, Status.QUEUED})
#: handed to a worker and not finished: each holds a slot of the limits
IN_FLIGHT = frozenset({Status.DISPATCHED, Status.RUNNING})
FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED})
#: will never change again: finished, or cancelled before it ran
ENDED = FINISHED | {Status.CANCELLED}


class Key(BaseModel):
    """One (host, VM, policy): one FIFO queue."""

    model_config = ConfigDict(frozen=True)

    host: Name
    vm: Name
    policy: Name


class VmEventMessage(BaseModel):
    """An accepted event, as published into its per-key queue and handed to a worker."""

    model_config = ConfigDict(frozen=True)

    id: str
    host: Name
    vm: Name
    policy: Name
    action: Action
    payload: dict[str, Any] = Field(default_factory=dict)
    accepted_at: float
    #: the event's class; None = its policy's (the dispatcher's POLICY_PRIORITIES)
    priority: Priority | None = None
    #: the VM's group, for its disruption budget (GROUP_BUDGETS); None = no group
    group: Name | None = None

    @property
    def key(self) -> Key:
        return Key(host=self.host, vm=self.vm, policy=self.policy)


class MappingDelta(BaseModel):
    """One change of the mapping, published on the mapping fanout with its version.

    ``keys_added`` carries every key one request added, under one version, in ``keys``
    ([host, vm, policy] each, first-appearance order; ``host`` is the first key's); a
    request adding one key sends the single-key ``key_added`` (host, vm, policy).
    ``keys_retired`` lists the keys a dispatcher retired (idle, their queues deleted)
    the same way."""

    version: int
    op: Literal[
        "key_added",
        "keys_added",
        "keys_retired",
        "host_availability",
        "vm_availability",
        "vm_removed",
    ]
    host: str
    vm: str | None = None
    policy: str | None = None
    available: bool | None = None
    keys: list[tuple[str, str, str]] | None = None


class PolicyView(BaseModel):
    #: events accepted and waiting in the key's queue (status ``queued``)
    queued: int


class VmView(BaseModel):
    available: bool
    policies: dict[str, PolicyView]


class HostView(BaseModel):
    available: bool
    vms: dict[str, VmView]


class MappingSnapshot(BaseModel):
    """The whole mapping, as the ledger keeps it: keys, not queue names (those are
    :class:`shared.topology.Topology`'s to build). Dict order is first-appearance order at
    every level."""

    version: int
    hosts: dict[str, HostView]
