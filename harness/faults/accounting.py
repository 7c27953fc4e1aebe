"""The accounting: every event that got a 202, its final status (GET /events/{id}) and
the calls the receiver saw, turned into anomalies. The definitions are in the package
docstring (:mod:`harness.faults`); this module is their code."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.faults.load import Accepted, LoadGenerator
from harness.faults.stack import FaultStack
from harness.processes import wait_until
from harness.recorder import COMPLETED, Call

FINAL = ("succeeded", "failed")
LOST, DUPLICATE, VIOLATION, STUCK = "lost", "duplicate", "violation", "stuck"
PHANTOM, MISREPORTED = "phantom", "misreported"
#: an action run again because its worker was killed after the call's answer and before
#: the ledger recorded it: the documented repeat of a cut-off action (reported only)
REPEATED = "repeated"
#: seconds after a completed call within which a kill of a worker cut off its record
KILL_GRACE = 1.0
REFUSED, UNANSWERED = "refused", "unanswered"
#: kinds that fail the run (MISREPORTED is only reported)
FAILING = (LOST, DUPLICATE, VIOLATION, STUCK, PHANTOM, REFUSED, UNANSWERED)


@dataclass
class Anomaly:
    kind: str
    event_id: str
    at: float  # when it arose (see classify), for the phase it is charged to
    detail: str
    phase: str = ""


@dataclass
class Accounting:
    events: int
    anomalies: list[Anomaly]
    statuses: dict[str, dict[str, Any] | None]
    #: queues not empty: while the stack ran (ready), and once it stopped (ready + unacked)
    queues_live: dict[str, int]
    queues_stopped: dict[str, int]
    dead_letters: int | None
    #: pairs of events whose order the order rule judged, and those out of order
    ordered_pairs: int = 0
    out_of_order: int = 0

    def count(self, kind: str, phase: str | None = None) -> int:
        return sum(1 for a in self.anomalies if a.kind == kind and phase in (None, a.phase))

    @property
    def drained(self) -> bool:
        return not self.queues_live and not self.queues_stopped

    @property
    def ok(self) -> bool:
        return self.drained and not any(self.count(k) for k in FAILING)


def wait_final(stack: FaultStack, ids: list[str], bound: float) -> dict[str, dict[str, Any] | None]:
    """Each event's view from GET /events/{id} (None: 404), once every one is final or
    ``bound`` seconds have passed."""
    seen: dict[str, dict[str, Any] | None] = {}

    def all_final() -> bool:
        for i in ids:
            row = seen.get(i)
            if row is None or row["status"] not in FINAL:  # a 404 is asked again too
                seen[i] = stack.event(i)
        return all((row := seen.get(i)) is not None and row["status"] in FINAL for i in ids)

    with contextlib.suppress(AssertionError):
        wait_until(all_final, bound, 1.0, what="every accepted event final")
    return seen


def classify(
    accepted: dict[str, Accepted],
    statuses: dict[str, dict[str, Any] | None],
    calls: list[Call],
    posted: set[str],
    per_vm: int,
    max_parallel: int,
    kills: Sequence[float] = (),
    action_limits: Mapping[str, int] | None = None,
    group_budgets: Mapping[str, int] | None = None,
) -> list[Anomaly]:
    """The anomalies of every accepted event (see the package's docstring). ``kills``:
    when the harness killed a worker process: a second completed call, with a larger
    fencing token, of an event whose first completed call ended less than
    :data:`KILL_GRACE` before such a kill is :data:`REPEATED`, not a duplicate — its
    worker died between the cloud's answer and the ledger's record. ``action_limits`` and
    ``group_budgets``: the run's ACTION_LIMITS and GROUP_BUDGETS, judged like the per-VM
    limit, per call (:func:`named_violations`)."""
    by_event: dict[str, list[Call]] = defaultdict(list)
    for c in calls:
        by_event[c.event_id].append(c)
    out: list[Anomaly] = []
    for eid, acc in accepted.items():
        row = statuses.get(eid)
        done = [c for c in by_event.get(eid, []) if c.outcome == COMPLETED]
        poison = acc.kind.startswith("poison")
        at = (row or {}).get("dispatched_at") or acc.first_try
        if row is None:
            out.append(Anomaly(LOST, eid, at, "the producer answers 404 for it"))
        elif row["status"] not in FINAL:
            out.append(Anomaly(STUCK, eid, at, f"still {row['status']} at the bound"))
        elif row["status"] == "succeeded" and not done:
            out.append(Anomaly(LOST, eid, at, "succeeded in the ledger, no completed call"))
        elif row["status"] == "failed" and not done and not poison:
            out.append(Anomaly(LOST, eid, at, f"failed without its effect: {row['error']}"))
        elif (row["status"] == "failed") != poison:
            out.append(Anomaly(MISREPORTED, eid, at, f"{row['status']} ({acc.kind})"))
        if len(done) > 1:
            tokens = ", ".join(str(c.token) for c in done)
            out.append(
                Anomaly(
                    REPEATED if _cut_off(done, kills) else DUPLICATE,
                    eid,
                    done[0].ended or done[0].started,
                    f"{len(done)} completed calls, tokens {tokens}",
                )
            )
    for c in calls:
        if c.event_id not in posted:
            out.append(
                Anomaly(
                    PHANTOM, c.event_id, c.started, f"a call for an id never posted ({c.outcome})"
                )
            )
        if c.running_vm > per_vm or c.running_all > max_parallel:
            out.append(
                Anomaly(
                    VIOLATION,
                    c.event_id,
                    c.started,
                    f"{c.running_vm} running on {c.host}/{c.vm} (limit {per_vm}), "
                    f"{c.running_all} overall (limit {max_parallel})",
                )
            )
        out += named_violations(c, action_limits or {}, group_budgets or {})
    return out


def named_violations(
    c: Call, action_limits: Mapping[str, int], group_budgets: Mapping[str, int]
) -> list[Anomaly]:
    """A call accepted while more calls of its action ran than the action's limit, or
    more VMs of its group were in action than the group's budget."""
    out = []
    limit = action_limits.get(c.action)
    if limit is not None and c.running_action > limit:
        detail = f"{c.running_action} {c.action} running (ACTION_LIMITS {limit})"
        out.append(Anomaly(VIOLATION, c.event_id, c.started, detail))
    budget = group_budgets.get(c.group) if c.group is not None else None
    if budget is not None and c.running_group > budget:
        detail = f"{c.running_group} VMs of group {c.group} in action (GROUP_BUDGETS {budget})"
        out.append(Anomaly(VIOLATION, c.event_id, c.started, detail))
    return out


def order(
    accepted: dict[str, Accepted], calls: list[Call], first_sent: dict[str, float]
) -> tuple[list[Anomaly], int]:
    """Each key's order, from the client's side: an event e1 whose 202 the client had
    received before an event e2 of the same (host, vm, policy) was first sent must have
    its first completed call — or, if none completed (a poison event), its first call —
    begin no later than e2's first call of any outcome. One violation per pair out of
    order, charged to e2's first call; and how many pairs were judged. Left out: events
    without a call (lost ones are counted as lost), and events the client did not post
    itself (``first_sent`` lacks them: the monitoring's, whose 202 it never saw). See
    :mod:`harness.faults`."""
    first_call: dict[str, float] = {}
    first_done: dict[str, float] = {}
    for c in calls:
        if c.started < first_call.get(c.event_id, float("inf")):
            first_call[c.event_id] = c.started
        if c.outcome == COMPLETED and c.started < first_done.get(c.event_id, float("inf")):
            first_done[c.event_id] = c.started
    #: when each event's run began: its first completed call, else its first call
    began = {**first_call, **first_done}
    by_key: dict[tuple[str, str, str], list[Accepted]] = defaultdict(list)
    for a in accepted.values():
        if a.id in first_sent and a.id in began:
            by_key[(a.host, a.vm, a.policy)].append(a)
    out: list[Anomaly] = []
    judged = 0
    for (host, vm, policy), events in by_key.items():
        earlier = sorted(events, key=lambda a: a.accepted_at)
        for e2 in events:
            for e1 in earlier:
                if e1.accepted_at >= first_sent[e2.id]:
                    break  # e1's 202 came after e2 was sent: the two raced, no order
                judged += 1
                if began[e1.id] > first_call[e2.id]:
                    which = "first completed call" if e1.id in first_done else "first call"
                    out.append(
                        Anomaly(
                            VIOLATION,
                            e2.id,
                            first_call[e2.id],
                            f"out of order on {host}/{vm}/{policy}: its first call began "
                            f"{began[e1.id] - first_call[e2.id]:.2f} s before the {which} "
                            f"of {e1.id}, whose 202 came "
                            f"{first_sent[e2.id] - e1.accepted_at:.2f} s before it was "
                            "first sent",
                        )
                    )
    return out, judged


def client_side(load: LoadGenerator, calls: list[Call]) -> list[Anomaly]:
    """Valid posts the producer refused (4xx), and ids still without a 202 when the
    client gave up, after the load stopped — unless another post of the id got a 202."""
    ran = {c.event_id for c in calls}
    out = []
    for r in load.refused:
        for eid in r.ids:
            if eid not in load.accepted:
                note = "; yet its action ran" if eid in ran else ""
                out.append(Anomaly(REFUSED, eid, r.at, f"HTTP {r.status}: {r.text[:160]}{note}"))
    for eid, first_try in load.abandoned:
        if eid not in load.accepted:
            out.append(Anomaly(UNANSWERED, eid, first_try, "no 202 before the client gave up"))
    return out


def charge(anomalies: list[Anomaly], phases: list[tuple[str, float]]) -> None:
    """Charge each anomaly to the phase (baseline, a fault, drain) it arose in."""
    for a in anomalies:
        a.phase = phases[0][0]
        for name, start in phases:
            if a.at >= start:
                a.phase = name


def queues(stack: FaultStack) -> list[str]:
    t = stack.topology
    return [
        *stack.event_queue_names(),
        t.actions_queue.name,
        *stack.extra_queues,
        t.completions_queue.name,
    ]


def nonempty(stack: FaultStack) -> dict[str, int]:
    return {n: d for n, d in stack.depths(queues(stack)).items() if d}


def wait_drained(stack: FaultStack, bound: float) -> dict[str, int]:
    """Queues still holding ready messages after ``bound`` seconds ({} once all drain)."""
    left: dict[str, int] = {}

    def drained() -> bool:
        left.clear()
        left.update(nonempty(stack))
        return not left

    with contextlib.suppress(AssertionError):
        wait_until(drained, bound, 1.0, what="queues drained")
    return left


def _cut_off(done: list[Call], kills: Sequence[float]) -> bool:
    """Two completed calls, the first's worker killed just after its answer (before the
    ledger could record it), the second a takeover (a larger fencing token)."""
    if len(done) != 2 or not done[1].token > done[0].token:
        return False
    ended = done[0].ended or done[0].started
    return any(ended <= k <= ended + KILL_GRACE for k in kills)
