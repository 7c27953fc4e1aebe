"""What a monitoring policy kind is: its config model, and the class that runs one policy
of the kind (entry-point group ``carousel.policies``, see ``docs/extending.md``).

A policy is pure: the runner hands it the view (:class:`~producer.monitoring.model.View`),
the changes the updater found and the time, and it answers with the events it asks for
(:class:`~producer.monitoring.model.Intent`). It reads no clock and does no I/O, so it
is tested on plain data with explicit times, and a restarted producer, starting it from
the same state, reaches the same conclusions.

Every event id is derived from the change that caused it (:func:`event_id`), never from
when it was seen: the same change observed again (after a restart, or by a relist) asks
for the same id, which the ledger accepts once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from producer.monitoring.model import Change, Intent, View, describe
from shared.models import Action
from shared.names import Name, is_valid_name
from shared.priority import Priority


def event_id(source: str, policy: str, vm: str, action: Action, *evidence: object) -> str:
    """The id of the event ``policy`` asks for on ``vm``, from what caused it."""
    key = "|".join([source, policy, vm, action.value, *map(str, evidence)])
    return "mon-" + sha256(key.encode()).hexdigest()[:32]


class PolicyConfig(BaseModel):
    """One entry of the policies file. A kind's config model derives from it and adds its
    fields; an unknown field is an error, named with the entry (``policies[1].debounse``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the events' policy name: one queue per (host, VM, policy), so it must be a Name
    name: Name
    #: the kind's registered name (its entry point in ``carousel.policies``)
    kind: str
    #: the policy's events coalesce (an event for a VM and action already waiting is
    #: answered with that one); None: as COALESCE_POLICIES says
    coalesce: bool | None = None
    #: the class stamped on the policy's events (a kind may change the default)
    priority: Priority = Priority.NORMAL


@dataclass
class PolicyContext:
    """What the policies of one source share: the source's name and incarnation (part of
    every event id), and counters the runner exports (``flaps_suppressed``,
    ``repeats_ignored``, ``invalid``...)."""

    source: str
    #: the source's incarnation ("" for a source without one, whose versions never
    #: repeat: OpenStack's are times): the same version seen in a restarted source is
    #: another change, hence another id
    incarnation: str = ""
    counts: Counter[str] = field(default_factory=Counter)

    def event_id(self, policy: str, vm: str, action: Action, *evidence: object) -> str:
        also = (self.incarnation,) if self.incarnation else ()
        return event_id(self.source, policy, vm, action, *evidence, *also)

    def intent(
        self,
        eid: str,
        host: str,
        vm: str,
        policy: str,
        action: Action,
        cause: Change,
        extra: dict[str, Any],
        coalesce: bool | None = None,
        priority: Priority | None = None,
    ) -> Intent | None:
        """The event, its payload carrying its cause; ``None`` (counted as ``invalid``)
        if a name would make the event invalid: a cloud may name things the ledger
        refuses, and one such VM must not block the others."""
        if not (is_valid_name(host) and is_valid_name(vm) and is_valid_name(policy)):
            self.counts["invalid"] += 1
            return None
        payload = {"cause": describe(cause), "source": self.source, **extra}
        return Intent(eid, host, vm, policy, action, cause, payload, coalesce, priority)


C = TypeVar("C", bound=PolicyConfig)


class PolicyKind(ABC, Generic[C]):
    """One policy of a kind: its config, its own state, and the runner's calls — once
    :meth:`start`, then :meth:`on_changes` after each observation is applied to the view,
    :meth:`tick` after each observation and whenever :meth:`next_due` comes, and
    :meth:`raised` for each event the ledger accepted."""

    #: the kind's config model: each entry of this kind is validated by it
    config_model: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init__(self, config: C, context: PolicyContext) -> None:
        self.config = config
        self.context = context

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    def start(self, view: View, now: float) -> list[Intent]:
        """Act on the state as found (the first list after a start of the producer or of
        the source): nothing says what changed, so a policy decides from the state what
        it would have decided from the changes that led there."""

    @abstractmethod
    def on_changes(self, view: View, changes: Sequence[Change], now: float) -> list[Intent]:
        """Act on ``changes``, already applied to ``view``."""

    def tick(self, view: View, now: float) -> list[Intent]:
        """What the policy's timers make due by ``now``; nothing by default."""
        return []

    def next_due(self) -> float | None:
        """When :meth:`tick` has something to do next; None = no timer running."""
        return None

    def pending(self) -> int:
        """Timers running (``/monitor/status`` shows the sum over the policies)."""
        return 0

    def raised(self, intent: Intent, now: float) -> None:
        """The ledger accepted ``intent`` at ``now``. Every policy hears of every event
        raised (``intent.policy`` says whose it is): a policy may hold back after
        another's event on the same VM or group, as autoscale's cooldown does after any
        scaling of the group. Nothing by default."""

    # -- for the kinds: building events ------------------------------------------------
    def event_id(self, vm: str, action: Action, *evidence: object) -> str:
        """This policy's event id for ``action`` on ``vm``, from what caused it."""
        return self.context.event_id(self.name, vm, action, *evidence)

    def intent(
        self,
        eid: str,
        host: str,
        vm: str,
        action: Action,
        cause: Change,
        extra: dict[str, Any] | None = None,
    ) -> Intent | None:
        """This policy's event (see :meth:`PolicyContext.intent`), of its class."""
        return self.context.intent(
            eid,
            host,
            vm,
            self.name,
            action,
            cause,
            extra or {},
            self.config.coalesce,
            self.config.priority,
        )
