"""Tests for the monitoring's accounting: what one observation adds to the metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from producer.monitoring.metrics import MonitorMetrics
from producer.monitoring.model import Observation, View, VmRecord, VmState
from producer.monitoring.policies import parse_rules
from producer.monitoring.runner import SourceMonitor
from producer.monitoring.updater import apply, diff


class _NoFetcher:
    streams = False


def test_the_changes_of_an_observation_are_counted_by_type() -> None:
    registry = CollectorRegistry()
    rules = parse_rules({"policies": [{"name": "heal", "kind": "auto_heal"}]}, "test")
    nothing: Any = None  # neither the repository nor the raiser is reached
    monitor = SourceMonitor(
        "cloud",
        _NoFetcher(),  # type: ignore[arg-type]
        nothing,
        rules,
        nothing,
        MonitorMetrics(registry),
        stream=False,
        resync_interval=60,
        poll_interval=10,
        utilisation_step=0.05,
    )
    vms = tuple(
        VmRecord(f"vm{i}", "h1", VmState.ACTIVE, 0.1, 0.2, None, i + 1) for i in range(1_000)
    )
    obs = Observation(at=1.0, full=True, vms=vms)
    d = diff(View(), obs)
    apply(monitor.view, d, obs.at)
    monitor._count(obs, d, d.writes)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"source": "cloud", **labels})

    assert value("carousel_monitor_changes_total", type="VmStateChanged") == 1_000
    assert value("carousel_monitor_changes_total", type="UtilisationChanged") == 1_000
    assert value("carousel_monitor_observations_total", kind="vm") == 1_000
    assert value("carousel_monitor_rows_written_total") == 1_000
    assert monitor.status.vms == 1_000
