"""The OpenStack fetcher: Nova's servers (and compute services) as monitoring records,
read through openstacksdk.

Nova has no change stream, so the source is polled: :meth:`OpenStackFetcher.list` is a
full observation every ``POLL_INTERVAL``, and :meth:`OpenStackFetcher.watch` always
reports the stream broken (the runner never calls it for a source with ``streams =
False``).

Connecting. :meth:`OpenStackFetcher.from_cloud` is the standard way: an entry of
``clouds.yaml`` (``OPENSTACK_CLOUD``), Keystone and the service catalog, whatever
auth type the entry names. :meth:`OpenStackFetcher.from_endpoint` skips Keystone: a
Compute endpoint (``OPENSTACK_COMPUTE_URL``, e.g. simcloud's
``http://127.0.0.1:8100/compute``) used as ``compute_endpoint_override``, with
keystoneauth's ``admin_token`` plugin when a token is given (sent as ``X-Auth-Token``)
or its ``none`` plugin when not (then ``X-Auth-Token: notused``). Either way the SDK
discovers the API version from the endpoint's version document and negotiates the
highest microversion both sides support.

Mapping (one server -> one :class:`VmRecord`):

* ``vm``: the server's **id** -- unique and immutable, unlike a Nova name (on simcloud
  the id is the VM's name);
* ``host``: ``OS-EXT-SRV-ATTR:host`` (admin-only: the cloud user must be allowed to
  see it, or every placed server counts as ``bad``);
* ``state``: from ``status``: ACTIVE, ERROR->DOWN, PAUSED and SUSPENDED->PAUSED,
  SHUTOFF and SHELVED->STOPPED, MIGRATING, RESIZE/VERIFY_RESIZE/REVERT_RESIZE->RESIZING,
  REBUILD->UPDATING, anything else UNKNOWN;
* ``cpu`` and ``ram``: always 0.0 -- Nova does not report a server's utilisation (that
  needs a telemetry service), so utilisation policies see idle VMs;
* ``group``: metadata ``carousel.group``; a group's bounds come from metadata
  ``carousel.group.min`` / ``carousel.group.max`` on its replicas (a group without
  both is not reported as a :class:`GroupRecord`);
* ``version``: ``updated`` in integer microseconds since the epoch (Nova gives whole
  seconds: two changes within a second share a version, which the updater accepts).

Hosts come from ``os-services`` (``nova-compute`` binaries): ``state`` down or
``forced_down`` -> DOWN, else ``status`` disabled -> MAINTENANCE, else UP; version =
the service's ``updated_at``. When the policy forbids listing services (403) or the
cloud lacks the API (404), hosts are derived from the servers' hosts, all UP. A server
with no host is skipped when it is not placed (BUILD, ERROR, shelved offloaded,
deleted), else counted in ``Observation.bad``, as is any record that cannot be read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import openstack
import requests
from keystoneauth1 import exceptions as ksa_exceptions
from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from producer.monitoring.fetchers import Listing, SourceUnavailable, StreamBroken
from producer.monitoring.model import (
    GroupRecord,
    HostRecord,
    HostState,
    Observation,
    VmRecord,
    VmState,
)
from shared.cloud import GROUP_KEY, GROUP_MAX_KEY, GROUP_MIN_KEY
from shared.names import is_valid_name
from shared.openstack_connection import connect_endpoint

if TYPE_CHECKING:
    from producer.settings import ProducerSettings

log = logging.getLogger(__name__)

#: Nova's server status -> the monitoring's VM state (anything else: UNKNOWN)
STATUS_TO_STATE: dict[str, VmState] = {
    "ACTIVE": VmState.ACTIVE,
    "ERROR": VmState.DOWN,
    "PAUSED": VmState.PAUSED,
    "SUSPENDED": VmState.PAUSED,
    "SHUTOFF": VmState.STOPPED,
    "SHELVED": VmState.STOPPED,
    "SHELVED_OFFLOADED": VmState.STOPPED,
    "MIGRATING": VmState.MIGRATING,
    "RESIZE": VmState.RESIZING,
    "VERIFY_RESIZE": VmState.RESIZING,
    "REVERT_RESIZE": VmState.RESIZING,
    "REBUILD": VmState.UPDATING,
}
#: statuses of a server legitimately without a host: skipped, not counted bad
UNPLACED = frozenset({"BUILD", "ERROR", "SHELVED_OFFLOADED", "DELETED", "SOFT_DELETED"})

#: what a failed call to the cloud raises (HTTP errors, connection failures, discovery)
CLOUD_ERRORS: tuple[type[BaseException], ...] = (
    os_exceptions.SDKException,
    ksa_exceptions.ClientException,
    requests.RequestException,
    OSError,
)

#: Nova JSON records (servers, services), as the SDK hands them back with their API names
Records = list[Mapping[str, Any]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class BadRecord(ValueError):
    """A server or service record that cannot be read."""


class OpenStackFetcher:
    """Polls one OpenStack cloud. The blocking SDK calls run in a thread
    (:func:`asyncio.to_thread`), one list at a time."""

    streams = False

    def __init__(self, conn: Connection, *, list_services: bool = True) -> None:
        self.conn = conn
        #: None: not tried yet; False: the cloud refused os-services, derive hosts
        self._services: bool | None = None if list_services else False
        self._lock = asyncio.Lock()

    @classmethod
    def from_cloud(cls, name: str, *, list_services: bool = True) -> OpenStackFetcher:
        """From the ``clouds.yaml`` entry ``name`` (and ``OS_*`` variables): raises
        ``openstack.exceptions.ConfigException`` at once if the entry is unusable."""
        return cls(openstack.connect(cloud=name), list_services=list_services)

    @classmethod
    def from_endpoint(
        cls,
        compute_url: str,
        token: str | None,
        *,
        request_timeout: float | None = 30.0,
        list_services: bool = True,
    ) -> OpenStackFetcher:
        """From a Compute endpoint used without Keystone (see :func:`connect_endpoint`)."""
        return cls(
            connect_endpoint(compute_url, token, request_timeout), list_services=list_services
        )

    async def list(self) -> Listing:
        async with self._lock:
            try:
                obs = await asyncio.to_thread(self._list_blocking)
            except CLOUD_ERRORS as exc:
                raise SourceUnavailable(f"OpenStack list failed: {exc!r}") from exc
        return Listing(obs, 0)

    async def watch(self, since: int, timeout: float) -> Listing:
        raise StreamBroken("Nova has no change stream: the OpenStack source is polled")

    async def close(self) -> None:
        await asyncio.to_thread(self.conn.close)

    # -- blocking part ---------------------------------------------------------------
    def _list_blocking(self) -> Observation:
        servers: Records = []
        bad = 0
        for server in self.conn.compute.servers(details=True, all_projects=True):
            try:
                servers.append(server.to_dict(computed=False, original_names=True))
            except Exception:  # one unreadable server never spoils the batch
                log.debug("unreadable server record %r", server, exc_info=True)
                bad += 1
        services = self._list_services()
        return build_observation(servers, services, bad=bad)

    def _list_services(self) -> Records | None:
        if self._services is False:
            return None
        try:
            found: Records = [
                s.to_dict(computed=False, original_names=True)
                for s in self.conn.compute.services(binary="nova-compute")
            ]
        except (os_exceptions.ForbiddenException, os_exceptions.NotFoundException) as exc:
            log.warning(
                "cannot list OpenStack compute services (%s): hosts are derived from the "
                "servers' hosts and always UP",
                exc,
            )
            self._services = False
            return None
        self._services = True
        return found


# -- mapping (pure) -----------------------------------------------------------------------
@dataclass(frozen=True)
class _GroupBounds:
    min: int
    max: int
    version: int


def build_observation(
    servers: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]] | None,
    *,
    bad: int = 0,
    at: float | None = None,
) -> Observation:
    """A full observation from Nova's JSON records (``servers/detail`` entries and
    ``os-services`` entries; ``services`` None: derive hosts from the servers). Each
    unreadable record is skipped and counted."""
    vms: list[VmRecord] = []
    groups: dict[str, _GroupBounds] = {}
    for raw in servers:
        try:
            record = server_to_record(raw)
            if record is not None and record.group is not None:
                bounds = group_bounds(raw, record.version)
                if bounds is not None:
                    old = groups.get(record.group)
                    if old is None or bounds.version >= old.version:
                        groups[record.group] = bounds
        except (BadRecord, KeyError, TypeError, ValueError, AttributeError) as exc:
            log.debug("skipping an unreadable server record: %s", exc)
            bad += 1
            continue
        if record is not None:
            vms.append(record)

    hosts: dict[str, HostRecord] = {}
    if services is not None:
        for raw in services:
            try:
                host = service_to_record(raw)
            except (BadRecord, KeyError, TypeError, ValueError, AttributeError) as exc:
                log.debug("skipping an unreadable service record: %s", exc)
                bad += 1
                continue
            old_host = hosts.get(host.host)
            # several services on one host (rare): the worst state wins
            if old_host is None or _severity(host.state) > _severity(old_host.state):
                hosts[host.host] = host
    derived: dict[str, HostRecord] = {}
    for vm in vms:  # a host no service reports (or no services at all): UP, versioned
        if vm.host not in hosts:  # by the latest change of a server on it
            old_derived = derived.get(vm.host)
            if old_derived is None or vm.version > old_derived.version:
                derived[vm.host] = HostRecord(vm.host, HostState.UP, vm.version)
    hosts.update(derived)

    return Observation(
        at=time.time() if at is None else at,
        full=True,
        hosts=tuple(hosts.values()),
        vms=tuple(vms),
        groups=tuple(GroupRecord(g, b.min, b.max, b.version) for g, b in groups.items()),
        bad=bad,
    )


def server_to_record(raw: Mapping[str, Any]) -> VmRecord | None:
    """One ``servers/detail`` entry as a record; None for a server not placed on a host
    yet (or any more); raises :class:`BadRecord` (or KeyError, TypeError, ValueError)
    when it cannot be read."""
    if not isinstance(raw, Mapping):
        raise BadRecord(f"a server record is not an object: {raw!r}")
    vm = raw.get("id") or raw.get("name")
    if not isinstance(vm, str) or not is_valid_name(vm):
        raise BadRecord(f"bad server id {vm!r}")
    status = raw["status"]
    if not isinstance(status, str):
        raise BadRecord(f"server {vm}: bad status {status!r}")
    status = status.upper()
    host = raw.get("OS-EXT-SRV-ATTR:host")
    if host is None:
        if status in UNPLACED:
            return None
        raise BadRecord(f"server {vm} ({status}) has no OS-EXT-SRV-ATTR:host (admin only)")
    if not isinstance(host, str) or not is_valid_name(host):
        raise BadRecord(f"server {vm}: bad host {host!r}")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise BadRecord(f"server {vm}: metadata is not an object")
    group = metadata.get(GROUP_KEY)
    if group is not None and (not isinstance(group, str) or not is_valid_name(group)):
        raise BadRecord(f"server {vm}: bad {GROUP_KEY} {group!r}")
    return VmRecord(
        vm=vm,
        host=host,
        state=STATUS_TO_STATE.get(status, VmState.UNKNOWN),
        cpu=0.0,
        ram=0.0,
        group=group,
        version=timestamp_version(raw["updated"]),
    )


def group_bounds(raw: Mapping[str, Any], version: int) -> _GroupBounds | None:
    metadata = raw.get("metadata") or {}
    low, high = metadata.get(GROUP_MIN_KEY), metadata.get(GROUP_MAX_KEY)
    if low is None or high is None:
        return None
    lo, hi = int(low), int(high)
    if not 0 <= lo <= hi:
        raise BadRecord(f"bad group bounds {low!r}..{high!r}")
    return _GroupBounds(lo, hi, version)


def service_to_record(raw: Mapping[str, Any]) -> HostRecord:
    """One ``os-services`` entry as a host record."""
    host = raw["host"]
    if not isinstance(host, str) or not is_valid_name(host):
        raise BadRecord(f"bad service host {host!r}")
    state, status = raw.get("state"), raw.get("status")
    if state not in ("up", "down") or status not in ("enabled", "disabled"):
        raise BadRecord(f"service on {host}: bad state/status {state!r}/{status!r}")
    if state == "down" or raw.get("forced_down") is True:
        host_state = HostState.DOWN
    elif status == "disabled":
        host_state = HostState.MAINTENANCE
    else:
        host_state = HostState.UP
    updated = raw.get("updated_at")
    return HostRecord(host, host_state, 0 if updated is None else timestamp_version(updated))


def timestamp_version(value: Any) -> int:
    """An ISO-8601 time (``2024-05-01T10:00:00Z``, with or without fraction or offset;
    naive = UTC) as integer microseconds since the epoch."""
    if not isinstance(value, str):
        raise BadRecord(f"bad timestamp {value!r}")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def _severity(state: HostState) -> int:
    return {HostState.UP: 0, HostState.MAINTENANCE: 1, HostState.DOWN: 2}[state]


# -- wiring ------------------------------------------------------------------------------
def polled_openstack_fetcher(settings: ProducerSettings) -> OpenStackFetcher:
    """The fetcher ``MONITOR_SOURCE=openstack`` uses: the ``clouds.yaml`` entry
    ``OPENSTACK_CLOUD`` when set, else ``OPENSTACK_COMPUTE_URL`` (+ ``OPENSTACK_TOKEN``)
    without Keystone."""
    if settings.openstack_cloud:
        return OpenStackFetcher.from_cloud(settings.openstack_cloud)
    if not settings.openstack_compute_url:
        raise ValueError("MONITOR_SOURCE=openstack needs OPENSTACK_CLOUD or OPENSTACK_COMPUTE_URL")
    return OpenStackFetcher.from_endpoint(
        settings.openstack_compute_url, settings.openstack_token or None
    )
