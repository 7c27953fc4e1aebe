"""The recent changes ``GET /monitor/status`` lists for a source: each change that made a
policy ask for events, when the runner raised them, and what became of each one. Pure:
the runner passes the intents, their outcomes and the time; no I/O here.

Only changes that asked for events are kept. The others (most utilisation moves, a VM
back up inside the debounce) raise nothing an operator must follow, and at a large cloud
they are most of the changes: the metrics count them. A change is recorded when its
events are raised, which for a heal is after the debounce, so ``at`` is the runner's
clock then and ``changed_at`` the change's own time.

The record is bounded, and so is the work of one batch: the last ``size`` changes, each
with at most ``events`` of its events. A batch with more (the first list of a large
cloud, a host of many VMs into maintenance) is walked from its end, newest first; once
``size`` changes are kept, the older ones are only counted."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from producer.monitoring.model import (
    Change,
    HostStateChanged,
    Intent,
    VmStateChanged,
)

#: the changes kept per source
SIZE = 50
#: the events kept per change (a host into maintenance asks for one per VM on it)
EVENTS = 20


class Outcome(StrEnum):
    #: accepted by the ledger, now or before under the same id
    RAISED = "raised"
    #: not raised: an event for the same VM and policy is unfinished
    SUPPRESSED = "suppressed"
    #: refused by the ledger: the id exists with other content
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """One event a change asked for, and what became of it."""

    id: str
    policy: str
    action: str
    host: str
    vm: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class ChangeSeen:
    """A change, when its events were raised (``at``), the first of them, and how many
    more it asked for."""

    at: float
    change: Change
    events: tuple[EventOutcome, ...]
    more_events: int = 0

    def to_json(self) -> dict[str, Any]:
        c = self.change
        return {
            "at": self.at,
            "changed_at": c.at,
            "change": type(c).__name__,
            "host": c.host,
            "vm": None if isinstance(c, HostStateChanged) else c.vm,
            "what": summary(c),
            "events": [
                {
                    "id": e.id,
                    "policy": e.policy,
                    "action": e.action,
                    "host": e.host,
                    "vm": e.vm,
                    "outcome": e.outcome.value,
                }
                for e in self.events
            ],
            "more_events": self.more_events,
        }


def summary(change: Change) -> str:
    """The change in a few words: ``vm h1-vm3 on h1 state ACTIVE -> DOWN``. A state
    before the first report is ``none``; after the object left the source, ``gone``."""
    if isinstance(change, VmStateChanged):
        moved = change.old_host is not None and change.old_host != change.host
        where = f"{change.old_host} -> {change.host}" if moved else change.host
        return f"vm {change.vm} on {where} state {_state(change.old, change.new)}"
    if isinstance(change, HostStateChanged):
        return f"host {change.host} state {_state(change.old, change.new)}"
    group = f" (group {change.group})" if change.group is not None else ""
    return f"vm {change.vm} on {change.host}{group} cpu {change.cpu:.0%} ram {change.ram:.0%}"


def _state(old: object | None, new: object | None) -> str:
    return f"{'none' if old is None else old} -> {'gone' if new is None else new}"


class RecentChanges:
    """The last ``size`` changes that asked for events, newest last; ``seen`` counts all
    of them since the start, kept or not."""

    def __init__(self, size: int = SIZE, events: int = EVENTS) -> None:
        self.events = events
        self.changes: deque[ChangeSeen] = deque(maxlen=size)
        self.seen = 0

    def record(
        self,
        at: float,
        intents: Sequence[Intent],
        suppressed: Collection[str] = (),
        conflicts: Collection[str] = (),
    ) -> None:
        """The changes that caused ``intents``, raised at ``at`` (an id in ``suppressed``
        or ``conflicts`` had that outcome, any other was raised): one entry per change,
        its events in their order, the change as new as its last event."""
        size = self.changes.maxlen or 0
        kept: dict[Change, deque[Intent]] = {}  # newest change first, its first events
        asked: dict[Change, int] = {}
        counted: set[Change] = set()  # the older changes of a long batch: counted only
        for intent in reversed(intents):
            cause = intent.cause
            first = kept.get(cause)
            if first is None:
                if len(kept) >= size:
                    counted.add(cause)
                    continue
                first = kept[cause] = deque(maxlen=self.events)
            asked[cause] = asked.get(cause, 0) + 1
            first.appendleft(intent)  # walking backwards: a full deque drops the latest
        self.seen += len(kept) + len(counted)
        for cause, first in reversed(kept.items()):
            events = tuple(_outcome(i, suppressed, conflicts) for i in first)
            self.changes.append(ChangeSeen(at, cause, events, asked[cause] - len(events)))

    def to_json(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [c.to_json() for c in reversed(self.changes)]


def _outcome(
    intent: Intent, suppressed: Collection[str], conflicts: Collection[str]
) -> EventOutcome:
    if intent.id in suppressed:
        outcome = Outcome.SUPPRESSED
    elif intent.id in conflicts:
        outcome = Outcome.CONFLICT
    else:
        outcome = Outcome.RAISED
    return EventOutcome(
        intent.id, intent.policy, intent.action.value, intent.host, intent.vm, outcome
    )
