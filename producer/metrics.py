"""Prometheus metrics of the producer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ProducerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "carousel_events_accepted", "Events accepted (202)", registry=self.registry
        )
        self.rejected = Counter(
            "carousel_events_rejected", "Requests refused", ["reason"], registry=self.registry
        )
        self.coalesced = Counter(
            "carousel_events_coalesced",
            "Events accepted (202) by answering with a waiting event's id instead of queueing them",
            registry=self.registry,
        )
        self.cancelled = Counter(
            "carousel_events_cancelled", "Events cancelled before dispatch", registry=self.registry
        )
        self.accept_seconds = Histogram(
            "carousel_accept_seconds", "Time from request to confirmed 202", registry=self.registry
        )
