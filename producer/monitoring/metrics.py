"""Prometheus metrics of the monitoring, on the producer's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(f"carousel_monitor_{name}", doc, labels, registry=registry)

        self.observations = counter(
            "observations", "Records observed (listed or streamed)", ["source", "kind"]
        )
        self.changes = counter("changes", "Changes found by the diff", ["source", "type"])
        self.stale = counter("stale_records", "Records older than what was seen", ["source"])
        self.bad = counter("bad_records", "Records that could not be read", ["source"])
        self.rows_written = counter("rows_written", "Repository rows written", ["source"])
        self.events_raised = counter(
            "events_raised", "Events the policies raised and the ledger accepted", ["policy"]
        )
        self.duplicates_suppressed = counter(
            "duplicates_suppressed",
            "Events not raised: one for the same VM and policy is unfinished",
            ["policy"],
        )
        self.flaps_suppressed = counter(
            "flaps_suppressed", "VM outages shorter than the auto-heal debounce", ["policy"]
        )
        self.repeats_ignored = counter(
            "repeats_ignored", "Outages inside a VM's ignore_repeat_within window", ["policy"]
        )
        self.stream_reconnects = counter(
            "stream_reconnects", "Times the change stream broke (then relisted)", ["source"]
        )
        self.source_restarts = counter(
            "source_restarts",
            "Lists that found the source restarted: another incarnation, or versions gone back",
            ["source"],
        )
        self.list_errors = counter("list_errors", "Failed lists of the source", ["source"])
        self.relist_seconds = Histogram(
            "carousel_monitor_relist_seconds",
            "One relist: fetch, diff, policies, write",
            ["source"],
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
