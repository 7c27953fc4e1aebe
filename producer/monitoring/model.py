"""What the monitoring parts share: the records a fetcher observes, the changes the
updater finds, and the events the policies ask for. Pure data: no I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.models import Action
from shared.priority import Priority


class VmState(StrEnum):
    ACTIVE = "ACTIVE"
    DOWN = "DOWN"
    PAUSED = "PAUSED"
    STOPPED = "STOPPED"
    MIGRATING = "MIGRATING"
    RESIZING = "RESIZING"
    UPDATING = "UPDATING"
    UNKNOWN = "UNKNOWN"


class HostState(StrEnum):
    UP = "UP"
    DOWN = "DOWN"
    MAINTENANCE = "MAINTENANCE"


@dataclass(frozen=True, slots=True)
class VmRecord:
    """One VM as a source reports it. ``version`` orders reports of the same VM (the
    source's resource version at its last change, or a timestamp): a streamed report
    with a version below the one last seen for the VM is stale and ignored; a full list
    is taken whatever its versions (see :mod:`producer.monitoring.updater`)."""

    vm: str
    host: str
    state: VmState
    cpu: float  # 0..1
    ram: float  # 0..1
    group: str | None
    version: int


@dataclass(frozen=True, slots=True)
class HostRecord:
    host: str
    state: HostState
    version: int


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """A VM group (a microservice's replicas), scaled between ``min`` and ``max``."""

    group: str
    min: int
    max: int
    version: int


@dataclass(frozen=True)
class Observation:
    """One batch from a fetcher. ``full``: a complete list (a relist), so a known VM,
    host or group absent from it is gone; else a delta from the change stream, where
    only ``gone_*`` name deletions. ``bad``: records the fetcher could not parse (each
    skipped alone: one VM's bad record never spoils the batch)."""

    at: float
    full: bool
    hosts: tuple[HostRecord, ...] = ()
    vms: tuple[VmRecord, ...] = ()
    groups: tuple[GroupRecord, ...] = ()
    gone_vms: tuple[str, ...] = ()
    gone_hosts: tuple[str, ...] = ()
    gone_groups: tuple[str, ...] = ()
    bad: int = 0


@dataclass(frozen=True)
class VmStateChanged:
    """A VM appeared (``old`` None), changed state or host, or is gone (``new`` None)."""

    vm: str
    host: str
    old: VmState | None
    new: VmState | None
    old_host: str | None
    version: int
    at: float


@dataclass(frozen=True)
class HostStateChanged:
    host: str
    old: HostState | None
    new: HostState | None
    version: int
    at: float


@dataclass(frozen=True)
class UtilisationChanged:
    vm: str
    host: str
    group: str | None
    cpu: float
    ram: float
    version: int
    at: float


Change = VmStateChanged | HostStateChanged | UtilisationChanged


def describe(change: Change) -> dict[str, Any]:
    """A change as JSON, for an event's payload (``cause``) and the logs."""
    out: dict[str, Any] = {"type": type(change).__name__}
    for name, value in vars(change).items():
        out[name] = value.value if isinstance(value, StrEnum) else value
    return out


@dataclass(frozen=True)
class Intent:
    """An event a policy asks for. ``id`` is derived from the change that caused it, so
    the same change observed again (after a restart or a relist) asks for the same id,
    which the ledger accepts once."""

    id: str
    host: str
    vm: str
    policy: str
    action: Action
    cause: Change
    payload: dict[str, Any] = field(default_factory=dict)
    #: the event coalesces (None: as COALESCE_POLICIES says): its policy's ``coalesce``
    coalesce: bool | None = None
    #: the class its policy stamps on it (``priority`` in the policies file)
    priority: Priority | None = None


@dataclass
class Diff:
    """What the updater found in one observation: the changes, and the records to write
    (only those that changed; a delta's stale ones are counted, not applied)."""

    changes: list[Change] = field(default_factory=list)
    upsert_vms: list[VmRecord] = field(default_factory=list)
    upsert_hosts: list[HostRecord] = field(default_factory=list)
    upsert_groups: list[GroupRecord] = field(default_factory=list)
    delete_vms: list[str] = field(default_factory=list)
    delete_hosts: list[str] = field(default_factory=list)
    delete_groups: list[str] = field(default_factory=list)
    #: records of a delta older than the view's (ignored)
    stale: int = 0
    #: records of a full list older than the view's: the source's versions went back
    #: (a restart, a restored database); the list is taken as it is
    rewound: int = 0
    #: VMs reported with a newer version but no material change: kept in memory (so the
    #: stale guard compares with the latest version), not written (not in ``writes``)
    touch_vms: list[VmRecord] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return (
            len(self.upsert_vms)
            + len(self.upsert_hosts)
            + len(self.upsert_groups)
            + len(self.delete_vms)
            + len(self.delete_hosts)
            + len(self.delete_groups)
        )


@dataclass
class View:
    """The repository's current picture of one source, in memory: what the updater diffs
    against and what the policies read. ``since``: when each VM entered its current
    state (as observed); ``members``: the VMs of each group."""

    vms: dict[str, VmRecord] = field(default_factory=dict)
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    groups: dict[str, GroupRecord] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)

    def vms_on(self, host: str) -> list[VmRecord]:
        return [r for r in self.vms.values() if r.host == host]
