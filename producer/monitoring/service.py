"""The monitoring as the producer runs it: built from the settings, one
:class:`SourceMonitor` per source in its own asyncio task group, beside the REST API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry

from producer.monitoring.fetchers import Fetcher, SimcloudFetcher
from producer.monitoring.metrics import MonitorMetrics
from producer.monitoring.policies import load_rules, parse_rules
from producer.monitoring.raiser import Raiser
from producer.monitoring.repository import Repository
from producer.monitoring.rules import Rules
from producer.monitoring.runner import SourceMonitor
from producer.service import EventService
from producer.settings import ProducerSettings
from shared.backoff import Backoff
from shared.names import is_valid_name

log = logging.getLogger(__name__)

#: the policies when POLICIES_FILE is empty (policies.example.yaml documents each field)
BUILT_IN_POLICIES: dict[str, Any] = {
    "policies": [
        {"name": "auto-heal", "kind": "auto_heal", "debounce": 15, "ignore_repeat_within": 0},
        {"name": "host-maintenance", "kind": "host_maintenance", "action": "live_migrate"},
        {
            "name": "autoscale",
            "kind": "autoscale",
            "metric": "cpu",
            "high": 0.8,
            "low": 0.2,
            "cooldown": 60,
        },
    ]
}


def rules_from(settings: ProducerSettings) -> Rules:
    """The policies, validated: raises ``PolicyFileError`` naming the file and field."""
    if settings.policies_file:
        return load_rules(settings.policies_file)
    return parse_rules(BUILT_IN_POLICIES, "built-in policies")


def fetcher_for(settings: ProducerSettings) -> Fetcher:
    if settings.monitor_source == "simcloud":
        return SimcloudFetcher(settings.simcloud_url, settings.simcloud_token)
    from producer.monitoring.openstack import polled_openstack_fetcher

    return polled_openstack_fetcher(settings)


class Monitor:
    def __init__(self, sources: list[SourceMonitor], clock: Any = time.time) -> None:
        self.sources = sources
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls, settings: ProducerSettings, service: EventService, registry: CollectorRegistry
    ) -> Monitor:
        rules = rules_from(settings)
        name = settings.monitor_source
        source = SourceMonitor(
            name,
            fetcher_for(settings),
            Repository(service.store.engine, name),
            rules,
            Raiser(service),
            MonitorMetrics(registry),
            stream=settings.monitor_stream,
            resync_interval=settings.monitor_resync_interval,
            poll_interval=settings.monitor_poll_interval,
            utilisation_step=settings.utilisation_step,
        )
        return cls([source])

    def group_of(self, host: str, vm: str) -> str | None:
        """The VM's group as its source last reported it (None: none, or not seen). In
        memory: the view each source keeps of its repository. A group that is not a valid
        name (the cloud's, unchecked) is no group."""
        for source in self.sources:
            record = source.view.vms.get(vm)
            if record is not None and record.group is not None:
                return record.group if is_valid_name(record.group) else None
        return None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="monitoring")

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for source in self.sources:
                tasks.create_task(self._supervise(source), name=f"monitoring {source.source}")

    async def _supervise(self, source: SourceMonitor) -> None:
        """Run ``source`` for ever: if it fails unexpectedly, log it, wait, and start it
        again from its repository, as a restarted producer would (the transient
        failures — broker, ledger, the source itself — it waits out on its own)."""
        backoff = Backoff(first=1.0, cap=30.0)
        while True:
            try:
                await source.run()
            except Exception as exc:
                source.status.stream = "crashed"
                source.status.last_list_error = repr(exc)
                delay = backoff.next()
                log.exception("monitoring %s failed; restarting in %.0fs", source.source, delay)
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for source in self.sources:
            await source.fetcher.close()

    def status(self) -> dict[str, Any]:
        now = self.clock()
        crashed = self._task is not None and self._task.done()
        return {
            "enabled": True,
            "running": self._task is not None and not crashed,
            "sources": [s.status.to_json(now) for s in self.sources],
        }
