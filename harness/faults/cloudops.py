"""The cloud's own records against the ledger: what ``cloud-api`` (:mod:`.cloudapi`)
concludes from simcloud's operations (``GET /v1/operations``) and each event's final
view (GET /events/{id}). Pure: the records are passed in.

An operation belongs to the event named in its params (:data:`LABEL`, which the event's
payload carries), else to the event its id names (the driver uses the event id as the
operation id): so an event run twice under two operation ids is still seen twice.

lost
    the producer answers 404 for the event; or it ``succeeded`` but no operation of it
    succeeded in the cloud; or it ``failed`` but the cloud failed none of its operations
    — unless its reason says the outcome is unknown (a clear final state, for an
    operator to look at).
duplicate
    more than one operation for one event.
violation
    an operation started on a VM while another one on that VM was still running by the
    cloud's clock (counted per operation that started into a busy VM, whether the cloud
    then ran it or refused it).
stuck
    the event not final at the bound.
phantom
    an operation of no event of the phase.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from harness.faults.accounting import (
    DUPLICATE,
    FINAL,
    LOST,
    PHANTOM,
    STUCK,
    VIOLATION,
    Anomaly,
)

#: the key, in an operation's params, naming the event it was started for
LABEL = "event"
#: how an event's reason says its outcome was not learnt (the worker's wording:
#: ``scheduler.worker.tracking`` and the action time limit in ``execution``)
UNKNOWN_MARKS = ("outcome unknown", "outcome is unknown")
#: how much of an event's reason a detail quotes
ERROR_CHARS = 160


@dataclass(frozen=True)
class Op:
    """One operation as the cloud recorded it; times are the cloud's clock."""

    id: str
    event: str
    action: str
    target: str
    state: str
    error: str | None
    started: float
    done: float | None  # None: still running

    @classmethod
    def of(cls, record: dict[str, Any]) -> Op:
        params = record.get("params") or {}
        label = params.get(LABEL)
        return cls(
            id=record["id"],
            event=label if isinstance(label, str) else record["id"],
            action=record["action"],
            target=record["target"],
            state=record["state"],
            error=record.get("error"),
            started=float(record["started_at"]),
            done=None if record.get("done_at") is None else float(record["done_at"]),
        )

    def __str__(self) -> str:
        why = f": {self.error}" if self.error else ""
        return f"{self.id} {self.action} on {self.target} {self.state}{why}"


def unknown(error: str | None) -> bool:
    return any(mark in (error or "") for mark in UNKNOWN_MARKS)


def judge(
    posted: dict[str, float],
    statuses: dict[str, dict[str, Any] | None],
    ops: list[Op],
) -> list[Anomaly]:
    """The anomalies of the events ``posted`` (id -> when first posted), given their
    final views and the cloud's operations in the order they started."""
    by_event: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_event[op.event].append(op)
    out: list[Anomaly] = []
    for eid, first_post in posted.items():
        row = statuses.get(eid)
        mine = by_event.get(eid, [])
        at = (row or {}).get("dispatched_at") or first_post
        cloud = "; ".join(map(str, mine)) or "no operation"
        if row is None:
            out.append(Anomaly(LOST, eid, at, f"the producer answers 404 for it; cloud: {cloud}"))
        elif row["status"] not in FINAL:
            out.append(Anomaly(STUCK, eid, at, f"still {row['status']} at the bound; {cloud}"))
        elif row["status"] == "succeeded" and not any(o.state == "succeeded" for o in mine):
            out.append(Anomaly(LOST, eid, at, f"succeeded in the ledger; cloud: {cloud}"))
        elif (
            row["status"] == "failed"
            and not any(o.state == "failed" for o in mine)
            and not unknown(row.get("error"))
        ):
            error = " ".join((row.get("error") or "").split())[:ERROR_CHARS]
            out.append(Anomaly(LOST, eid, at, f"failed ({error}), not by the cloud: {cloud}"))
        if len(mine) > 1:
            out.append(Anomaly(DUPLICATE, eid, at, f"{len(mine)} operations: {cloud}"))
    out += overlaps(posted, statuses, ops)
    for op in ops:
        if op.event not in posted:
            out.append(Anomaly(PHANTOM, op.event, min(posted.values(), default=0.0), str(op)))
    return out


def overlaps(
    posted: dict[str, float],
    statuses: dict[str, dict[str, Any] | None],
    ops: list[Op],
) -> list[Anomaly]:
    """A violation for each operation that started on a VM while an earlier one there
    was still running (``ops`` in the order they started)."""
    out: list[Anomaly] = []
    earlier: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        running = [a for a in earlier[op.target] if op.started < _end(a)]
        if running:
            row = statuses.get(op.event) or {}
            at = row.get("dispatched_at") or posted.get(op.event, 0.0)
            beside = ", ".join(f"{a.id} ({a.state})" for a in running)
            why = f": {op.error}" if op.error else ""
            detail = f"on {op.target}, {op.id} started while {beside} still ran; it {op.state}{why}"
            out.append(Anomaly(VIOLATION, op.event, at, detail))
        earlier[op.target].append(op)
    return out


def _end(op: Op) -> float:
    return math.inf if op.done is None else op.done
