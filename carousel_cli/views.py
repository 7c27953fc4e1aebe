"""``carousel status``: the services' readiness, the scheduler's limits and counters, and
each elasticity pool with its workers and its last decisions, in one view."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


def readiness(ready: Mapping[str, tuple[str, str]]) -> Table:
    """``ready`` maps a service to (its URL, what its /readyz said)."""
    out = Table(title="services", title_justify="left")
    for column in ("service", "url", "ready"):
        out.add_column(column)
    for name, (url, said) in ready.items():
        style = "green" if said == "ready" else "red"
        out.add_row(name, url, Text(said, style=style))
    return out


def scheduler(stats: Mapping[str, Any]) -> Table:
    limits = stats.get("limits", {})
    out = Table(title="scheduler", title_justify="left", show_header=False)
    out.add_column("what")
    out.add_column("value")
    out.add_row(
        "active", str(stats.get("active", "?")) + (" (paused)" if stats.get("paused") else "")
    )
    out.add_row(
        "limits",
        ", ".join(f"{k} {v}" for k, v in limits.items()),
    )
    out.add_row("in flight", str(stats.get("in_flight")))
    out.add_row("waiting heads", f"{stats.get('held')} on {stats.get('ready_hosts')} host(s)")
    out.add_row(
        "dispatched / completed",
        f"{stats.get('dispatched_total')} / {stats.get('completed_total')}",
    )
    out.add_row("dead-lettered", str(stats.get("dead_lettered", 0)))
    return out


def pools(status: Mapping[str, Any], now: float | None = None) -> RenderableType:
    """One table per profile: its workers by state, backlog and target, and the last
    decisions with their reasons (newest last)."""
    now = time.time() if now is None else now
    parts: list[RenderableType] = []
    for name, profile in status.get("profiles", {}).items():
        config = profile.get("config", {})
        counts = ", ".join(f"{k} {v}" for k, v in profile.get("counts", {}).items() if v)
        seen = profile.get("observed_at")
        when = f"{now - float(seen):.0f} s ago" if seen is not None else "no decision yet"
        out = Table(
            title=(
                f"pool {name} (min {config.get('min_workers')}, max "
                f"{config.get('max_workers')}): {len(profile.get('workers', []))} worker(s) "
                f"now; at the last decision ({when}): {counts or 'no workers'}, backlog "
                f"{profile.get('backlog')}, target {profile.get('desired')}"
            ),
            title_justify="left",
        )
        for column in ("ago", "backlog", "target", "spawn", "retire", "reason"):
            out.add_column(column)
        for decision in profile.get("decisions", [])[-5:]:
            out.add_row(
                f"{now - float(decision.get('at', now)):.0f} s",
                str(decision.get("backlog")),
                str(decision.get("target")),
                str(decision.get("spawn")),
                str(decision.get("retire")),
                str(decision.get("reason")),
            )
        parts.append(out)
    if not parts:
        parts.append(Text("no worker pools"))
    budget = status.get("budget")
    head = Text(
        f"elasticity: budget {budget} worker(s)" + (" (dry run)" if status.get("dry_run") else "")
    )
    return Group(head, *parts)
