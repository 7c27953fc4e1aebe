"""The monitoring policies of one source: changes and time in, the events to raise out.
Pure: the runner passes the clock in and does the raising.

Each policy of the file is an instance of its kind (:mod:`producer.monitoring.kind`;
Carousel's own in :mod:`producer.monitoring.kinds`, a plug-in's from its package), with
its own config and state. :class:`Policies` hands each of the runner's calls to every
policy, in the file's order, and gathers what they ask for: it knows no kind.

Every event id is derived from the change that caused it (and never from when it was
seen), so a restart, whose :meth:`Policies.start` finds the same state again, or a relist
that reports the same change again, asks for the same ids, which the ledger accepts once.
A new occurrence (a new outage, a new maintenance, another scaling) comes with a new
version, hence a new id; and a restarted source, whose versions start again, has another
incarnation (:attr:`Policies.incarnation`), which is part of every id.

A policy that raises (a bug, a plug-in's most likely) does not stop the others: its
answer to that call is lost, the error is kept in :attr:`Policies.failures` for the
runner to log, and the policy is called again next time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from producer.monitoring.kind import PolicyContext, PolicyKind, event_id
from producer.monitoring.model import Change, Intent, View
from producer.monitoring.rules import PolicyFileError, Rules, load_rules, parse_rules

__all__ = ["Policies", "PolicyFileError", "Rules", "event_id", "load_rules", "parse_rules"]

T = TypeVar("T")


@dataclass(frozen=True)
class PolicyFailure:
    """A policy's call that raised: which policy, which call, and the error."""

    policy: str
    call: str
    error: Exception


class Policies:
    """One per monitored source. ``start`` once, then ``on_changes`` after each diff is
    applied to the view, ``tick`` when ``next_due`` comes, ``raised`` for each event the
    ledger accepted. The counters are plain ints for the runner to export."""

    def __init__(self, rules: Rules, source: str) -> None:
        self.rules = rules
        self.context = PolicyContext(source)
        self._policies: list[PolicyKind[Any]] = [
            kind(config, self.context)
            for config, kind in zip(rules.policies, rules.kinds, strict=True)
        ]
        #: calls that raised since the runner last took them (:meth:`take_failures`)
        self.failures: list[PolicyFailure] = []

    @property
    def source(self) -> str:
        return self.context.source

    @property
    def incarnation(self) -> str:
        """The source's incarnation: part of every event id (see :class:`PolicyContext`)."""
        return self.context.incarnation

    @incarnation.setter
    def incarnation(self, value: str) -> None:
        self.context.incarnation = value

    @property
    def flaps_suppressed(self) -> int:
        """VMs back up inside the auto-heal debounce (not healed)."""
        return self.context.counts["flaps_suppressed"]

    @property
    def repeats_ignored(self) -> int:
        """VMs down again inside ``ignore_repeat_within`` of their heal (left alone)."""
        return self.context.counts["repeats_ignored"]

    @property
    def invalid(self) -> int:
        """Intents dropped because a host, VM or group name is not a valid event name."""
        return self.context.counts["invalid"]

    # -- the runner's calls --------------------------------------------------------
    def start(self, view: View, now: float) -> list[Intent]:
        """Act on the state as found (after a restart nothing says what changed)."""
        return self._gather("start", lambda p: p.start(view, now))

    def on_changes(self, view: View, changes: Sequence[Change], now: float) -> list[Intent]:
        return self._gather("on_changes", lambda p: p.on_changes(view, changes, now))

    def tick(self, view: View, now: float) -> list[Intent]:
        """What the policies' timers make due by ``now`` (debounces, cooldowns)."""
        return self._gather("tick", lambda p: p.tick(view, now))

    def next_due(self) -> float | None:
        dues = [self._call(p, "next_due", _next_due, None) for p in self._policies]
        return min((d for d in dues if d is not None), default=None)

    def pending(self) -> int:
        """Timers running: heals waiting out their debounce, groups cooling down."""
        return sum(self._call(p, "pending", _pending, 0) for p in self._policies)

    def raised(self, intent: Intent, now: float) -> None:
        """Every policy hears of every event raised (see :meth:`PolicyKind.raised`)."""
        for policy in self._policies:
            self._call(policy, "raised", lambda p: p.raised(intent, now), None)

    def take_failures(self) -> list[PolicyFailure]:
        """The calls that raised since the last time, for the runner to log."""
        failures, self.failures = self.failures, []
        return failures

    # -- one policy's call ---------------------------------------------------------
    def _gather(self, call: str, each: Callable[[PolicyKind[Any]], list[Intent]]) -> list[Intent]:
        out: list[Intent] = []
        for policy in self._policies:
            out += self._call(policy, call, each, [])
        return out

    def _call(
        self, policy: PolicyKind[Any], call: str, run: Callable[[PolicyKind[Any]], T], failed: T
    ) -> T:
        """``run(policy)``; ``failed`` if it raised (the error kept in ``failures``)."""
        try:
            return run(policy)
        except Exception as exc:  # a policy's bug: the others go on
            self.failures.append(PolicyFailure(policy.name, call, exc))
            return failed


def _next_due(policy: PolicyKind[Any]) -> float | None:
    return policy.next_due()


def _pending(policy: PolicyKind[Any]) -> int:
    return policy.pending()
