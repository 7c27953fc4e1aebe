"""``carousel status``: the services' readiness, the dispatcher's limits and counters (and,
with dispatcher shards, each shard), and each elasticity pool with its workers and its
last decisions, in one view; ``carousel show``: one event."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from scheduler.dispatcher.board import state_words as dispatcher_state

#: decisions shown per pool (after runs of alike ones are folded into one row)
DECISION_ROWS = 6


def readiness(ready: Mapping[str, tuple[str, str]]) -> Table:
    """``ready`` maps a service to (its URL, what its /readyz said)."""
    out = Table(title="services", title_justify="left")
    for column in ("service", "url", "ready"):
        out.add_column(column)
    for name, (url, said) in ready.items():
        style = "green" if said == "ready" else "red"
        out.add_row(name, Text(url), Text(said, style=style))
    return out


def limits(values: Mapping[str, Any]) -> str:
    """``10 at once, 1 per VM, no per-host cap`` (any other limit as ``name value``)."""
    known = {"max_parallel": "{} at once", "per_vm": "{} per VM", "per_host": "{} per host"}
    said = []
    for name, value in values.items():
        if name == "per_host" and not value:
            said.append("no per-host cap")
        else:
            said.append(known.get(name, f"{name} {{}}").format(value))
    return ", ".join(said)


def dispatcher(stats: Mapping[str, Any]) -> Table:
    out = Table(title="dispatcher", title_justify="left", show_header=False)
    out.add_column("what")
    out.add_column("value")
    limit = stats.get("limits", {}).get("max_parallel")
    out.add_row("state", dispatcher_state(stats))
    out.add_row("limits", limits(stats.get("limits", {})))
    out.add_row(
        "in flight", f"{stats.get('in_flight')}" + (f" of {limit}" if limit is not None else "")
    )
    out.add_row("waiting heads", f"{stats.get('held')} on {stats.get('ready_hosts')} host(s)")
    out.add_row(
        "dispatched / completed",
        f"{stats.get('dispatched_total')} / {stats.get('completed_total')}",
    )
    out.add_row("sent again (sweeper)", str(stats.get("resent_total", 0)))
    out.add_row("dead-lettered", str(stats.get("dead_lettered", 0)))
    return out


def shards(cluster: Mapping[str, Any]) -> RenderableType:
    """The dispatcher shards as ``GET /shards`` shows them: a line on the cluster (live
    shards, partitions and those no shard holds, the newest and the agreed share table,
    a pause), then one row per live shard: the partitions it holds, its share of
    ``max_parallel`` in the newest share table, its events in flight, its demand (hosts
    with ready work) and the seconds its lease (its heartbeat, by the ledger's clock) has
    left."""
    partitions = int(cluster.get("partitions") or 0)
    unheld = sum(1 for p in cluster.get("partition_leases", []) if p.get("holder") is None)
    tables = cluster.get("share_tables") or {}
    newest, agreed = tables.get("newest"), tables.get("agreed")
    said = f"dispatcher shards: {len(cluster.get('shards', []))} live, {partitions} partitions"
    if unheld:
        said += f" ({unheld} unheld)"
    if newest is not None:
        said += f", share table v{newest.get('version')}"
        said += f" (agreed v{agreed.get('version')})" if agreed is not None else " (none agreed)"
    if (cluster.get("marker") or {}).get("paused"):
        said += ", paused"
    out = Table()
    for column in ("shard", "partitions", "share", "in flight", "demand", "lease left"):
        out.add_column(column, justify="left" if column == "shard" else "right")
    for shard in cluster.get("shards", []):
        share = shard.get("share")
        left = shard.get("expires_in")
        out.add_row(
            Text(str(shard.get("shard"))),
            str(len(shard.get("partitions_held", []))),
            "-" if share is None else str(share),
            str(shard.get("in_flight")),
            str(shard.get("demand")),
            "-" if left is None else f"{float(left):.1f} s",
        )
    return Group(Text(said), out)


def event(found: Mapping[str, Any]) -> Table:
    """One event as ``GET /events/{id}`` shows it; a queued one with what holds it."""
    out = Table(title=f"event {found.get('id')}", title_justify="left", show_header=False)
    out.add_column("what")
    out.add_column("value")
    out.add_row("status", Text(str(found.get("status"))))
    waiting = found.get("waiting")
    if waiting:
        out.add_row("waiting", Text(f"{waiting.get('text')} ({waiting.get('source')})"))
    out.add_row(
        "key", Text(f"host {found.get('host')}, vm {found.get('vm')}, policy {found.get('policy')}")
    )
    out.add_row("action", Text(str(found.get("action"))))
    for name in ("accepted_at", "dispatched_at", "started_at", "finished_at"):
        if found.get(name) is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(found[name])))
            out.add_row(name.removesuffix("_at"), stamp)
    if found.get("attempts"):
        out.add_row("attempts", str(found["attempts"]))
    for name in ("worker", "error"):
        if found.get(name):
            out.add_row(name, Text(str(found[name])))
    return out


@dataclass(frozen=True)
class DecisionRun:
    """Consecutive decisions alike (same reason and target, nothing spawned or retired)
    folded into one: the newest's time, the backlog from first to last, how many."""

    at: float
    backlog: str
    target: Any
    spawn: int
    retire: int
    reason: str
    count: int = 1


def decision_runs(decisions: Sequence[Mapping[str, Any]]) -> list[DecisionRun]:
    """``decisions`` (oldest first) with each run of alike ones folded into one row, so
    that a scale-up stays in view after many ``steady`` rounds."""
    runs: list[tuple[Mapping[str, Any], Mapping[str, Any], int]] = []  # first, last, count
    for decision in decisions:
        if runs and _alike(runs[-1][1], decision):
            first, _, count = runs[-1]
            runs[-1] = (first, decision, count + 1)
        else:
            runs.append((decision, decision, 1))
    out = []
    for first, last, count in runs:
        start, end = first.get("backlog"), last.get("backlog")
        out.append(
            DecisionRun(
                at=float(last.get("at", 0.0)),
                backlog=str(end) if start == end else f"{start} → {end}",
                target=last.get("target"),
                spawn=int(last.get("spawn") or 0),
                retire=int(last.get("retire") or 0),
                reason=str(last.get("reason")),
                count=count,
            )
        )
    return out


def _alike(one: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    quiet = not (one.get("spawn") or one.get("retire") or other.get("spawn") or other.get("retire"))
    same = one.get("reason") == other.get("reason") and one.get("target") == other.get("target")
    return quiet and same


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
        for run in decision_runs(profile.get("decisions", []))[-DECISION_ROWS:]:
            out.add_row(
                f"{now - run.at:.0f} s",
                run.backlog,
                str(run.target),
                str(run.spawn),
                str(run.retire),
                Text(run.reason + (f" ({run.count} times)" if run.count > 1 else "")),
            )
        parts.append(out)
    if not parts:
        parts.append(Text("no worker pools"))
    budget = status.get("budget")
    head = Text(
        f"elasticity: budget {budget} worker(s)" + (" (dry run)" if status.get("dry_run") else "")
    )
    return Group(head, *parts)
