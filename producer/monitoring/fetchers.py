"""Fetchers: how a source is observed. Every fetcher lists (a full observation); one
with a change stream also follows it from the listing's resource version. The runner
(:mod:`producer.monitoring.runner`) relists on a timer and whenever the stream breaks.

:class:`SimcloudFetcher` speaks simcloud's API (``GET /v1/state``, the long-poll
``GET /v1/watch``); the OpenStack fetcher (:mod:`producer.monitoring.openstack`) lists
servers through openstacksdk and has no stream (Nova offers none), so it is polled.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from producer.monitoring.model import (
    GroupRecord,
    HostRecord,
    HostState,
    Observation,
    VmRecord,
    VmState,
)


class StreamBroken(Exception):
    """The change stream failed (network, 5xx): relist, then follow it again."""


class StreamGone(StreamBroken):
    """The source no longer has the changes after our resource version (HTTP 410): only
    a relist can catch up."""


class SourceUnavailable(Exception):
    """The list failed; the runner retries it with backoff."""


@dataclass(frozen=True)
class Listing:
    observation: Observation
    #: where to follow the stream from (0 for a source without one)
    resource_version: int
    #: the source's incarnation (simcloud's id of its process; "" when the source has
    #: none): a source that restarted has another one, and its versions start again
    incarnation: str = ""


class Fetcher(Protocol):
    #: True when :meth:`watch` follows a change stream; else the source is polled
    streams: bool

    async def list(self) -> Listing: ...

    async def watch(self, since: int, timeout: float) -> Listing:
        """The changes after ``since`` (waiting up to ``timeout`` for one); raises
        :class:`StreamBroken` or :class:`StreamGone`."""
        ...

    async def close(self) -> None: ...


class SimcloudFetcher:
    streams = True

    def __init__(self, url: str, token: str = "", request_timeout: float = 30.0) -> None:
        #: the incarnation of the last list: the stream is followed within it
        self.incarnation = ""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=headers, timeout=request_timeout
        )

    async def list(self) -> Listing:
        try:
            response = await self.client.get("/v1/state")
            response.raise_for_status()
            # a large cloud's list is long to decode: in a thread, so that the loop (the
            # REST API, the policies' timers) is not held up meanwhile
            listing = await asyncio.to_thread(read_state, response.content)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise SourceUnavailable(f"simcloud list failed: {exc!r}") from exc
        self.incarnation = listing.incarnation
        return listing

    async def watch(self, since: int, timeout: float) -> Listing:
        try:
            response = await self.client.get(
                "/v1/watch",
                params={"since": since, "timeout": timeout},
                timeout=timeout + 10,
            )
        except httpx.HTTPError as exc:
            raise StreamBroken(f"watch failed: {exc!r}") from exc
        if response.status_code == 410:
            raise StreamGone(f"resource version {since} is gone from the stream")
        if response.status_code != 200:
            raise StreamBroken(f"watch answered {response.status_code}")
        try:
            body = response.json()
            rv = int(body["resource_version"])
            changes = list(body["changes"])
            incarnation = str(body.get("incarnation", ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise StreamBroken(f"watch answered an unreadable body: {exc!r}") from exc
        if incarnation != self.incarnation:  # its versions are not those of our list
            raise StreamGone(
                f"simcloud restarted (incarnation {incarnation}, listed {self.incarnation})"
            )
        return Listing(changes_to_observation(changes), rv, incarnation)

    async def close(self) -> None:
        await self.client.aclose()


def read_state(content: bytes) -> Listing:
    """simcloud's ``GET /v1/state`` answer as a full observation; raises ``ValueError``,
    ``KeyError`` or ``TypeError`` when it is not one."""
    body = json.loads(content)
    rv = int(body["resource_version"])
    incarnation = str(body.get("incarnation", ""))
    hosts, vms, groups, bad = parse_objects(
        body.get("hosts", []), body.get("vms", []), body.get("groups", [])
    )
    obs = Observation(at=time.time(), full=True, hosts=hosts, vms=vms, groups=groups, bad=bad)
    return Listing(obs, rv, incarnation)


def changes_to_observation(changes: Iterable[Any]) -> Observation:
    """Stream entries (``{"kind", "type", "object", "version"}``) as one delta."""
    upserts: dict[str, list[Any]] = {"host": [], "vm": [], "group": []}
    gone: dict[str, list[str]] = {"host": [], "vm": [], "group": []}
    bad = 0
    for change in changes:
        try:
            kind, obj = change["kind"], change["object"]
            if change["type"] == "delete":
                gone[kind].append(str(obj["name"]))
            else:
                upserts[kind].append(obj)
        except (KeyError, TypeError):
            bad += 1
    hosts, vms, groups, bad_objects = parse_objects(
        upserts["host"], upserts["vm"], upserts["group"]
    )
    return Observation(
        at=time.time(),
        full=False,
        hosts=hosts,
        vms=vms,
        groups=groups,
        gone_vms=tuple(gone["vm"]),
        gone_hosts=tuple(gone["host"]),
        gone_groups=tuple(gone["group"]),
        bad=bad + bad_objects,
    )


def parse_objects(
    hosts: Iterable[Any], vms: Iterable[Any], groups: Iterable[Any]
) -> tuple[tuple[HostRecord, ...], tuple[VmRecord, ...], tuple[GroupRecord, ...], int]:
    """Records from simcloud's JSON objects; one that cannot be read is skipped and
    counted, the others stand."""
    bad = 0
    out_hosts: list[HostRecord] = []
    out_vms: list[VmRecord] = []
    out_groups: list[GroupRecord] = []
    for h in hosts:
        try:
            out_hosts.append(HostRecord(_name(h), HostState(h["state"]), int(h["version"])))
        except (KeyError, TypeError, ValueError):
            bad += 1
    for v in vms:
        try:
            out_vms.append(_vm(v))
        except (KeyError, TypeError, ValueError):
            bad += 1
    for g in groups:
        try:
            out_groups.append(
                GroupRecord(_name(g), int(g["min"]), int(g["max"]), int(g["version"]))
            )
        except (KeyError, TypeError, ValueError):
            bad += 1
    return tuple(out_hosts), tuple(out_vms), tuple(out_groups), bad


#: a state by its name; one the model does not know is UNKNOWN
_VM_STATES: dict[object, VmState] = {s.value: s for s in VmState}


def _vm(v: Mapping[str, Any]) -> VmRecord:
    group = v.get("group")
    return VmRecord(
        vm=_name(v),
        # a host's (a group's) name is one string in the view, not one per VM: a list of a
        # large cloud decodes each VM's copy afresh
        host=sys.intern(str(v["host"])),
        state=_VM_STATES.get(v["state"], VmState.UNKNOWN),
        cpu=_fraction(v.get("cpu", 0.0)),
        ram=_fraction(v.get("ram", 0.0)),
        group=None if group is None else sys.intern(str(group)),
        version=int(v["version"]),
    )


def _name(obj: Mapping[str, Any]) -> str:
    name = obj["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"bad name {name!r}")
    return name


def _fraction(value: Any) -> float:
    f = float(value)
    if not 0.0 <= f <= 1.0:  # NaN too
        raise ValueError(f"utilisation {value!r} outside 0..1")
    return f
