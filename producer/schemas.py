"""REST schemas of the producer (apart from the wire models in ``shared.models``)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, Tag, field_validator
from pydantic_core import PydanticCustomError

from shared.models import Action, Key, MappingSnapshot
from shared.names import Name
from shared.priority import Priority
from shared.topology import Topology
from shared.waiting import Waiting

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_BATCH = 1000


class VmEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: Name
    vm: Name
    policy: Name
    action: Action
    id: Name | None = Field(None, description="Idempotency key; generated when absent.")
    payload: dict[str, Any] = Field(default_factory=dict, description="JSON object, <= 64 KiB.")
    coalesce: StrictBool | None = Field(
        None,
        description="Coalesce: if an event for the same host, VM, policy and action is "
        "waiting (not yet dispatched), answer with its id instead of queueing a second "
        "copy. Absent: true for the policies of COALESCE_POLICIES.",
    )
    priority: Priority | None = Field(
        None,
        description="The event's class: urgent, normal or background. Absent: its policy's "
        "class (the dispatcher's POLICY_PRIORITIES), normal by default. A higher class is "
        "dispatched first, a lower one still gets its minimum share (CLASS_MIN_SHARES); "
        "FIFO within a (host, VM, policy) holds whatever the classes.",
    )
    group: Name | None = Field(
        None,
        description="The VM's group (a name), for its disruption budget: at most "
        "GROUP_BUDGETS' number of a group's VMs are in action at once. Absent: the group "
        "the monitoring last saw the VM in, if the producer monitors a source; else none.",
    )

    @field_validator("payload")
    @classmethod
    def _payload_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_PAYLOAD_BYTES:
            raise PydanticCustomError(
                "payload_too_large",
                "payload larger than {limit} bytes: {size} bytes of JSON (UTF-8, compact)",
                {"limit": MAX_PAYLOAD_BYTES, "size": size},
            )
        return value


class EventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[VmEventIn] = Field(min_length=1, max_length=MAX_BATCH)


def _form(body: Any) -> str | None:
    """Which form a body is: a batch (an object with ``events``) or one event (any other
    object); None for anything else (refused as neither). Each form's errors are then
    its own: a single event's 422 does not list what a batch would lack."""
    if not isinstance(body, dict):
        return None
    return "EventBatchIn" if "events" in body else "VmEventIn"


#: ``POST /events``'s body: one event, or a batch. The forms are told apart by the
#: ``events`` key; an error's location names the form, as a plain union's did
#: (``["body", "VmEventIn", "host"]``, ``["body", "EventBatchIn", "events", 0, "host"]``).
EventsIn = Annotated[
    Annotated[VmEventIn, Tag("VmEventIn")] | Annotated[EventBatchIn, Tag("EventBatchIn")],
    Discriminator(
        _form,
        custom_error_type="body_form",
        custom_error_message=(
            f'must be one event (a JSON object) or {{"events": [...]}} with 1 to {MAX_BATCH} events'
        ),
    ),
]


class AcceptedOut(BaseModel):
    ids: list[str] = Field(
        description="In request order; a coalesced event's is the id of the waiting event "
        "that answers it."
    )
    coalesced: list[bool] = Field(
        description="For each of ids: the event was coalesced into a waiting one (not "
        "queued again)."
    )


class CancelRefused(BaseModel):
    """``DELETE /events/{id}``'s 409: the event was dispatched already."""

    detail: str
    id: str
    status: str = Field(description="The event's status, unchanged by the refused cancel.")


class EventOut(BaseModel):
    id: str
    host: str
    vm: str
    policy: str
    action: str
    payload: dict[str, Any] = Field(
        description="As posted; for an event the monitoring raised, ``cause`` is the "
        "change that raised it."
    )
    status: str = Field(description="queued, dispatched, running, succeeded, failed or cancelled.")
    attempts: int
    worker: str | None
    error: str | None
    accepted_at: float
    dispatched_at: float | None
    started_at: float | None
    finished_at: float | None = Field(
        description="When it finished (succeeded or failed), or was cancelled."
    )
    waiting: Waiting | None = Field(
        None,
        description="While it is queued: what holds it (its place in its key, the "
        "dispatcher paused, its host or VM unavailable, a limit, its class, its turn); "
        "null for any other status.",
    )

    @field_validator("payload", mode="before")
    @classmethod
    def _stored_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value


class AvailabilityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: strict: JSON true or false only, not 1, "yes" or "f" (lax mode's guesses)
    available: StrictBool


class PolicyOut(BaseModel):
    queue: str = Field(description="The key's durable event queue.")
    pending: int = Field(description="Events accepted and waiting in it (status queued).")


class VmOut(BaseModel):
    available: bool
    policies: dict[str, PolicyOut]


class HostOut(BaseModel):
    available: bool
    vms: dict[str, VmOut]


class MappingOut(BaseModel):
    """``GET /mapping``: hosts, VMs and policies in first-appearance order, with each
    key's queue name (built by the topology; the ledger stores only keys)."""

    version: int
    hosts: dict[str, HostOut]

    @classmethod
    def of(cls, snapshot: MappingSnapshot, topology: Topology) -> MappingOut:
        return cls(
            version=snapshot.version,
            hosts={
                host: HostOut(
                    available=hview.available,
                    vms={
                        vm: VmOut(
                            available=vview.available,
                            policies={
                                policy: PolicyOut(
                                    queue=topology.event_queue_name(
                                        Key(host=host, vm=vm, policy=policy)
                                    ),
                                    pending=pview.queued,
                                )
                                for policy, pview in vview.policies.items()
                            },
                        )
                        for vm, vview in hview.vms.items()
                    },
                )
                for host, hview in snapshot.hosts.items()
            },
        )
