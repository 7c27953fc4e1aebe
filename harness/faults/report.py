"""The report: a table per fault, the evidence for each anomaly (its ledger row, the
receiver's calls, the service log lines naming it), and the final line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.faults.accounting import (
    DUPLICATE,
    LOST,
    MISREPORTED,
    PHANTOM,
    REFUSED,
    REPEATED,
    STUCK,
    UNANSWERED,
    VIOLATION,
    Accounting,
    Anomaly,
)
from harness.faults.base import FaultResult
from harness.recorder import Call

#: anomalies shown with their evidence, per kind (all are counted)
EVIDENCE_PER_KIND = 8
LOG_LINES_PER_EVENT = 8


def final_line(results: list[FaultResult], acc: Accounting) -> str:
    injected = sum(r.injected for r in results if not r.skipped)
    return (
        f"faults: {injected} injected, {acc.events} events, lost {acc.count(LOST)}, "
        f"duplicates {acc.count(DUPLICATE)}, violations {acc.count(VIOLATION)}, "
        f"stuck {acc.count(STUCK)}"
    )


def slowest_recovery(r: FaultResult) -> str:
    if not r.recoveries:
        return "-"
    if any(x is None for x in r.recoveries):
        return "none"
    return f"{max(x for x in r.recoveries if x is not None):.1f}"


def table(results: list[FaultResult], acc: Accounting, t0: float) -> str:
    head = (
        f"{'phase / fault':<30} {'at s':>5} {'injected':>8} {'recovery s':>10} "
        f"{'lost':>5} {'dup':>4} {'viol':>5} {'stuck':>6}  note"
    )
    rows = [head, "-" * len(head)]

    def counts(phase: str) -> str:
        return (
            f"{acc.count(LOST, phase):>5} {acc.count(DUPLICATE, phase):>4} "
            f"{acc.count(VIOLATION, phase):>5} {acc.count(STUCK, phase):>6}"
        )

    rows.append(f"{'baseline (no fault)':<30} {0:>5} {'-':>8} {'-':>10} {counts('baseline')}")
    for r in results:
        injected = "skipped" if r.skipped else str(r.injected)
        rows.append(
            f"{r.name:<30} {r.started - t0:>5.0f} {injected:>8} {slowest_recovery(r):>10} "
            f"{counts(r.name)}  {r.note}"
        )
    rows.append(f"{'drain (load stopped)':<30} {'':>5} {'-':>8} {'-':>10} {counts('drain')}")
    rows.append(
        "at s: when the fault's phase began; anomalies are charged to the phase they arose in"
    )
    rows.append("recovery s: from the injection until an event was dispatched again after the")
    rows.append("harness restored what it broke (max over injections; 'none': not within 90 s)")
    return "\n".join(rows)


def _calls_of(calls: list[Call], eid: str, t0: float) -> str:
    mine = [c for c in calls if c.event_id == eid]
    if not mine:
        return "    receiver: no call"
    return "\n".join(
        f"    receiver: call at +{c.started - t0:.2f}s token={c.token} {c.outcome}"
        f" ({(c.ended or c.started) - c.started:.2f}s) running vm/all={c.running_vm}/"
        f"{c.running_all} {' '.join(c.notes)}"
        for c in mine
    )


def _log_lines(log_dir: Path, eid: str) -> list[str]:
    out = []
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if eid in line:
                out.append(f"    {path.name}: {line.strip()[:220]}")
    return out[:LOG_LINES_PER_EVENT]


def _row(row: dict[str, Any] | None) -> str:
    if row is None:
        return "    ledger: 404"
    keys = ("status", "attempts", "worker", "error", "dispatched_at", "started_at")
    return "    ledger: " + " ".join(f"{k}={row.get(k)}" for k in keys)


def evidence(acc: Accounting, calls: list[Call], log_dir: Path, t0: float) -> str:
    out: list[str] = []
    kinds = (LOST, DUPLICATE, VIOLATION, STUCK, PHANTOM, REFUSED, UNANSWERED, MISREPORTED, REPEATED)
    for kind in kinds:
        found: list[Anomaly] = [a for a in acc.anomalies if a.kind == kind]
        if not found:
            continue
        out.append(f"{kind}: {len(found)}")
        for a in found[:EVIDENCE_PER_KIND]:
            out.append(f"  {a.event_id} [{a.phase}, +{a.at - t0:.1f}s] {a.detail}")
            if a.event_id not in acc.statuses:
                continue  # not about an event: a fault's own check (kubernetes-retire)
            out.append(_row(acc.statuses.get(a.event_id)))
            out.append(_calls_of(calls, a.event_id, t0))
            out.extend(_log_lines(log_dir, a.event_id))
        if len(found) > EVIDENCE_PER_KIND:
            out.append(f"  ... and {len(found) - EVIDENCE_PER_KIND} more")
    return "\n".join(out)


def errors(results: list[FaultResult]) -> list[str]:
    """A line per fault that raised instead of being injected as meant (the run fails)."""
    return [f"FAULT NOT INJECTED AS MEANT: {r.name}: {r.error}" for r in results if r.error]


def queues(acc: Accounting) -> str:
    lines = []
    if acc.queues_live:
        lines.append(f"queues not drained while running (ready): {acc.queues_live}")
    if acc.queues_stopped:
        lines.append(f"queues not empty once the services stopped: {acc.queues_stopped}")
    if not lines:
        lines.append("queues drained: every event queue, the actions queues and completions")
    lines.append(f"dead-letter queue: {acc.dead_letters or 0} messages (garbage moved aside)")
    return "\n".join(lines)
