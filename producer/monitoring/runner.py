"""One source's monitoring loop: list, follow the stream, relist; diff each observation,
raise what the policies ask for, then write what changed.

A list is the truth at its moment: it replaces the view, and the policies start from the
first one (the state as found, not as remembered). A list from a source that restarted
(another incarnation, or versions gone back: :meth:`SourceMonitor._incarnation`) is
logged once and counted, and the policies start again from it, as after a restart of
the producer.

The order is what makes a crash harmless: events are raised (accepted by the ledger)
before the repository records the change, so a producer killed in between sees the
change again when it restarts and raises the same ids, which the ledger accepts once.
One lock per source keeps the observation path and the policies' timers from
interleaving; no lock or thread per host, whatever the size of the cloud."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from producer.monitoring import updater
from producer.monitoring.fetchers import Fetcher, Listing, SourceUnavailable, StreamBroken
from producer.monitoring.metrics import MonitorMetrics
from producer.monitoring.model import Diff, Intent, Observation, View
from producer.monitoring.policies import Policies
from producer.monitoring.raiser import Raiser
from producer.monitoring.recent import RecentChanges
from producer.monitoring.repository import Repository
from producer.monitoring.retry import in_thread
from producer.monitoring.rules import Rules
from shared.backoff import Backoff

log = logging.getLogger(__name__)

#: the longest one long-poll of the stream waits for a change
WATCH_TIMEOUT = 25.0
#: the longest the timers loop sleeps: bounds how late a debounce can fire
TIMER_GRANULARITY = 1.0


@dataclass
class SourceStatus:
    """What ``GET /monitor/status`` shows of one source."""

    source: str
    #: "starting", "listing", "following" (the stream), "polling", "broken" (relisting),
    #: "crashed" (restarting after an unexpected error: see the log)
    stream: str = "starting"
    last_list_at: float | None = None
    last_list_seconds: float | None = None
    last_list_error: str | None = None
    #: the resource version the stream is followed from
    resource_version: int = 0
    #: when the source last answered (a list, or a stream answer: at least every 25 s)
    last_observed_at: float | None = None
    #: when the long-poll now outstanding was sent
    watching_since: float | None = None
    reconnects: int = 0
    #: the source's incarnation as last listed ("" for a source without one)
    incarnation: str = ""
    #: lists that found the source restarted (another incarnation, versions gone back)
    source_restarts: int = 0
    vms: int = 0
    hosts: int = 0
    groups: int = 0
    pending_timers: int = 0
    #: the last changes that asked for events, and what became of them
    recent: RecentChanges = field(default_factory=RecentChanges)

    def to_json(self, now: float) -> dict[str, Any]:
        """With ``lag_seconds``: 0 while the stream is live (a long-poll is outstanding
        and not overdue: changes arrive as they happen), else the seconds since the
        source last answered — up to a poll interval when polling, growing when the
        source is unreachable. And ``recent_changes``, newest first, of the
        ``changes_with_events`` seen since the start."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "recent"}
        live = (
            self.stream == "following"
            and self.watching_since is not None
            and now - self.watching_since <= WATCH_TIMEOUT + 5
        )
        seen = self.last_observed_at
        out["lag_seconds"] = 0.0 if live else None if seen is None else round(now - seen, 3)
        out["changes_with_events"] = self.recent.seen
        out["recent_changes"] = self.recent.to_json()
        return out


class SourceMonitor:
    def __init__(
        self,
        source: str,
        fetcher: Fetcher,
        repository: Repository,
        rules: Rules,
        raiser: Raiser,
        metrics: MonitorMetrics,
        *,
        stream: bool,
        resync_interval: float,
        poll_interval: float,
        utilisation_step: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.fetcher = fetcher
        self.repository = repository
        self.rules = rules
        self.policies = Policies(rules, source)
        self.raiser = raiser
        self.metrics = metrics
        self.stream = stream and fetcher.streams
        self.resync_interval = resync_interval
        self.poll_interval = poll_interval
        self.utilisation_step = utilisation_step
        self.clock = clock
        self.status = SourceStatus(source)
        self.view = View()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()  # a new timer may be due before the timers loop wakes
        self._counted = {"flaps": 0, "repeats": 0}
        #: the policies have not started: the next list starts them (see _handle)
        self._starting = True

    async def run(self) -> None:
        await in_thread("creating the repository's tables", self.repository.create_schema)
        self.view = await in_thread("loading the repository", self.repository.load)
        self._starting = True  # the first list starts the policies, as after a restart
        log.info("monitoring %s: %d VMs known from before", self.source, len(self.view.vms))
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._observe())
            tasks.create_task(self._timers())

    # -- observing -----------------------------------------------------------------
    async def _observe(self) -> None:
        relist_backoff = Backoff(first=0.5, cap=min(self.poll_interval, 10.0))
        while True:
            listing = await self._list(relist_backoff)
            next_list = self.clock() + (self.resync_interval if self.stream else self.poll_interval)
            if not self.stream:
                self.status.stream = "polling"
                await asyncio.sleep(max(0.0, next_list - self.clock()))
                continue
            rv = listing.resource_version
            self.status.stream = "following"
            while (left := next_list - self.clock()) > 0:
                self.status.watching_since = self.clock()
                try:
                    got = await self.fetcher.watch(rv, min(WATCH_TIMEOUT, left))
                except StreamBroken as exc:
                    self.status.stream = "broken"
                    self.status.reconnects += 1
                    self.metrics.stream_reconnects.labels(self.source).inc()
                    log.warning("%s stream broke (%s); relisting", self.source, exc)
                    await asyncio.sleep(relist_backoff.next())
                    break
                relist_backoff.reset()
                rv = got.resource_version
                self.status.resource_version = rv
                self.status.last_observed_at = self.clock()
                if _has_records(got.observation):
                    await self._handle(got.observation)

    async def _list(self, backoff: Backoff) -> Any:
        while True:
            started = time.perf_counter()
            self.status.stream = (
                "listing" if self.status.stream == "starting" else self.status.stream
            )
            try:
                listing = await self.fetcher.list()
            except SourceUnavailable as exc:
                self.status.last_list_error = str(exc)
                self.metrics.list_errors.labels(self.source).inc()
                log.warning("listing %s failed: %s", self.source, exc)
                await asyncio.sleep(backoff.next())
                continue
            await self._handle(listing.observation, listing)
            took = time.perf_counter() - started
            self.metrics.relist_seconds.labels(self.source).observe(took)
            self.status.last_list_at = self.clock()
            self.status.last_observed_at = self.status.last_list_at
            self.status.last_list_seconds = round(took, 4)
            self.status.last_list_error = None
            self.status.resource_version = listing.resource_version
            return listing

    async def _handle(self, obs: Observation, listing: Listing | None = None) -> None:
        """Diff ``obs`` (the observation of ``listing`` when it is a list), raise what the
        policies ask for, write what changed."""
        async with self._lock:
            if obs.full:  # a large cloud's list is long to diff: not on the loop
                diff = await asyncio.to_thread(updater.diff, self.view, obs, self.utilisation_step)
            else:
                diff = updater.diff(self.view, obs, self.utilisation_step)
            updater.apply(self.view, diff, obs.at)
            now = self.clock()
            if listing is not None and self._incarnation(listing, diff):
                self._starting = True
            self.policies.incarnation = self.status.incarnation
            if self._starting:
                # from the list as found: level-triggered, so what the diff found is in it
                self.policies = Policies(self.rules, self.source)
                self.policies.incarnation = self.status.incarnation
                self._counted = {"flaps": 0, "repeats": 0}
                self._starting = False
                intents = self.policies.start(self.view, now)
            else:
                intents = self.policies.on_changes(self.view, diff.changes, now)
            intents += self.policies.tick(self.view, now)  # a zero debounce is due now
            await self._raise(intents)
            self._wake.set()
            written = await in_thread(
                "writing the repository", lambda: self.repository.write(diff, self.view)
            )
            self._count(obs, diff, written)

    def _incarnation(self, listing: Listing, diff: Diff) -> bool:
        """Whether ``listing`` comes from a source that restarted since the last list:
        another incarnation, a resource version below the one followed, or records older
        than the view's (a restarted producer knows only these: its view is from the
        ledger). Logged once per restart: the next list finds the same incarnation and
        the versions the view took."""
        status = self.status
        other = bool(status.incarnation) and listing.incarnation != status.incarnation
        back = listing.resource_version < status.resource_version
        restarted = other or back or diff.rewound > 0
        if restarted:
            status.source_restarts += 1
            self.metrics.source_restarts.labels(self.source).inc()
            log.warning(
                "%s restarted (incarnation %s -> %s, resource version %d -> %d, %d records "
                "older than remembered): its list replaces the view",
                self.source,
                status.incarnation or "-",
                listing.incarnation or "-",
                status.resource_version,
                listing.resource_version,
                diff.rewound,
            )
        status.incarnation = listing.incarnation
        return restarted

    # -- timers (the auto-heal debounce) ---------------------------------------------
    async def _timers(self) -> None:
        while True:
            due = self.policies.next_due()
            now = self.clock()
            delay = (
                TIMER_GRANULARITY if due is None else min(max(due - now, 0.01), TIMER_GRANULARITY)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            async with self._lock:
                await self._raise(self.policies.tick(self.view, self.clock()))
                self._count_policies()

    async def _raise(self, intents: Sequence[Intent]) -> None:
        if not intents:
            return
        result = await self.raiser.raise_all(intents)
        now = self.clock()
        for intent in result.raised:
            self.policies.raised(intent, now)
            self.metrics.events_raised.labels(intent.policy).inc()
            log.info(
                "monitoring raised %s %s for %s/%s (%s)",
                intent.action.value,
                intent.id,
                intent.host,
                intent.vm,
                intent.policy,
            )
        for intent in result.suppressed:
            self.metrics.duplicates_suppressed.labels(intent.policy).inc()
        self.status.recent.record(
            now,
            intents,
            {i.id for i in result.suppressed},
            {i.id for i in result.conflicts},
        )

    # -- accounting ----------------------------------------------------------------
    def _count(self, obs: Observation, diff: Diff, written: int) -> None:
        m, s = self.metrics, self.source
        m.observations.labels(s, "vm").inc(len(obs.vms))
        m.observations.labels(s, "host").inc(len(obs.hosts))
        # once per type, not per change: a first list of a large cloud has a change per VM
        for kind, n in Counter(type(change).__name__ for change in diff.changes).items():
            m.changes.labels(s, kind).inc(n)
        m.stale.labels(s).inc(diff.stale)
        m.bad.labels(s).inc(obs.bad)
        m.rows_written.labels(s).inc(written)
        self.status.vms = len(self.view.vms)
        self.status.hosts = len(self.view.hosts)
        self.status.groups = len(self.view.groups)
        self._count_policies()

    def _count_policies(self) -> None:
        """Carry the policies' own counters (pure code keeps plain ints) into metrics, and
        log the policies' calls that raised (each lost its answer; the others went on)."""
        for failure in self.policies.take_failures():
            log.error(
                "monitoring %s: policy %s failed in %s; its other calls go on",
                self.source,
                failure.policy,
                failure.call,
                exc_info=failure.error,
                extra={"policy": failure.policy},
            )
        flaps, repeats = self.policies.flaps_suppressed, self.policies.repeats_ignored
        if flaps > self._counted["flaps"]:
            self.metrics.flaps_suppressed.labels("auto_heal").inc(flaps - self._counted["flaps"])
        if repeats > self._counted["repeats"]:
            self.metrics.repeats_ignored.labels("auto_heal").inc(repeats - self._counted["repeats"])
        self._counted = {"flaps": flaps, "repeats": repeats}
        self.status.pending_timers = self.policies.pending()


def _has_records(obs: Observation) -> bool:
    return bool(
        obs.vms
        or obs.hosts
        or obs.groups
        or obs.gone_vms
        or obs.gone_hosts
        or obs.gone_groups
        or obs.bad
    )
