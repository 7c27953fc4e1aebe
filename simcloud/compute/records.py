"""What the Compute API keeps beside the cloud (lost on restart: cosmetic, or found again
from the operation a retried call names): the operation last started on each server,
the servers asked for and not yet made, extra metadata, the last view of a deleted
server, and when each server was first seen (``created``) and first shown as it is
(``updated``), strictly increasing."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

View = dict[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Tracked:
    """The latest operation started through this API on one server."""

    op_id: str
    action: str
    task: str
    confirmed: bool = False


@dataclass
class Create:
    """A server asked for by ``POST /servers``: a scale-out of ``group``."""

    op_id: str
    name: str
    group: str
    flavor: str
    image: str
    created: datetime


@dataclass
class Stamp:
    fingerprint: str
    at: datetime


@dataclass
class Records:
    """Everything this API remembers, and the moments it hands out."""

    tracked: dict[str, Tracked] = field(default_factory=dict)
    creates: dict[str, Create] = field(default_factory=dict)  # by requested name
    create_ops: dict[str, str] = field(default_factory=dict)  # op id -> requested name
    #: op id -> (the server it deletes, its group)
    delete_ops: dict[str, tuple[str, str]] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    deleted: dict[str, View] = field(default_factory=dict)  # server -> its last view
    stamps: dict[str, Stamp] = field(default_factory=dict)
    created: dict[str, datetime] = field(default_factory=dict)
    last_stamp: datetime = _EPOCH

    def created_at(self, name: str, vms: Iterable[str]) -> datetime:
        """When this API first saw VM ``name``, ``vms`` being the cloud's in its order:
        VMs first seen together are stamped in that order, their order of creation."""
        created = self.created.get(name)
        if created is None:
            present = list(vms)
            for vm in present:
                if vm not in self.created:
                    self.created[vm] = self.next_moment()
            for gone in set(self.created) - set(present) - {name}:
                del self.created[gone]
                self.stamps.pop(gone, None)
            created = self.created.setdefault(name, self.next_moment())
        return created

    def stamp(self, key: str, shown: Mapping[str, Any]) -> datetime:
        """When this API first showed ``key`` as ``shown``."""
        fingerprint = json.dumps(
            {k: v for k, v in shown.items() if k not in ("updated", "links")},
            sort_keys=True,
            default=str,
        )
        old = self.stamps.get(key)
        if old is not None and old.fingerprint == fingerprint:
            return old.at
        at = self.next_moment()
        self.stamps[key] = Stamp(fingerprint, at)
        return at

    def next_moment(self) -> datetime:
        """Now, but strictly after every moment handed out before."""
        at = max(now(), self.last_stamp + timedelta(microseconds=1))
        self.last_stamp = at
        return at


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime, *, zone: bool = True) -> str:
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"{text}Z" if zone else text
