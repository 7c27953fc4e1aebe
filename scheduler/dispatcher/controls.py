"""Live changes of the dispatcher's limits, classes and weights: the bodies the admin API
takes (``PUT /limits``, ``/limits/named``, ``/classes``, ``/weights``) and one registry,
:data:`CONTROLS`, of how each is applied to the dispatcher — a new kind of change is one
model and one registered function.

A single dispatcher applies a change at once (:class:`LocalControls`). A dispatcher shard
appends it to the ledger's log first (:class:`SharedControls`, :mod:`shared.control_log`)
and applies it; every other shard applies it from the log at its next round, in the log's
order, through the same registry (:func:`apply`), so that limits act on all shards. On a
shard ``max_parallel`` is the global limit the shards split (``Target.set_global_limit``),
not the shard's own slots.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import sqlalchemy as sa
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from scheduler.dispatcher.roundrobin import Weights
from scheduler.dispatcher.settings import MAX_WEIGHT, DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared import control_log
from shared.models import Action
from shared.names import NAME_PATTERN, is_valid_name
from shared.priority import Priority


def _json_integer(value: object) -> object:
    """A JSON integer (``2`` or ``2.0``), not ``true`` or ``"2"``, which lax mode would
    take as 1 and 2."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    return value


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_parallel: int | None = Field(None, ge=1)
    per_vm: int | None = Field(None, ge=1)
    per_host: int | None = Field(None, ge=0, description="0 = no per-host limit")

    _a_json_integer = field_validator("max_parallel", "per_vm", "per_host", mode="before")(
        _json_integer
    )


#: a minimum share: a JSON number in [0, 1]
Share = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]


#: a weight: a JSON integer in 1..MAX_WEIGHT
Weight = Annotated[int, Field(ge=1, le=MAX_WEIGHT), BeforeValidator(_json_integer)]
#: the most entries one table of a body may have
MAX_ENTRIES = 100_000
_NAME = NAME_PATTERN.strip("^$")
#: a table's keys in the OpenAPI: names (pydantic's patternProperties would let others
#: through with any value), or ``host/vm``
NAME_KEYS: JsonDict = {"propertyNames": {"pattern": NAME_PATTERN}}
VM_KEYS: JsonDict = {"propertyNames": {"pattern": f"^{_NAME}/{_NAME}$"}}


def _names(value: dict[str, Any] | None) -> dict[str, Any] | None:
    for key in value or {}:
        if not is_valid_name(key):
            raise ValueError(f"{key!r} is not a valid name")
    return value


class ClassesIn(BaseModel):
    """Each table given replaces the current one whole; one left out is kept."""

    model_config = ConfigDict(extra="forbid")

    policies: dict[str, Priority] | None = Field(
        None,
        max_length=MAX_ENTRIES,
        json_schema_extra=NAME_KEYS,
        description="The class of each policy's events that name none; others are normal. "
        "Applies to heads held from now on.",
    )
    min_shares: dict[Priority, Share] | None = Field(
        None,
        max_length=len(Priority),
        description="Each class's minimum share of the dispatches while it has ready "
        "work, each in [0, 1], their sum at most 1 (else 409, nothing changed); a class "
        "left out has none.",
    )

    _policy_names = field_validator("policies")(_names)


#: an action limit or a group budget: a JSON integer in 1..MAX_WEIGHT
Limit = Weight


class NamedLimitsIn(BaseModel):
    """Each table given replaces the current one whole; one left out is kept."""

    model_config = ConfigDict(extra="forbid")

    actions: dict[Action, Limit] | None = Field(
        None,
        max_length=len(Action),
        description="At most this many actions of a kind in flight at once; an action "
        "left out has no limit.",
    )
    groups: dict[str, Limit] | None = Field(
        None,
        max_length=MAX_ENTRIES,
        json_schema_extra=NAME_KEYS,
        description="Disruption budgets: at most this many of a group's VMs in action at "
        "once; a group left out has the default budget.",
    )
    default_group_budget: int | None = Field(
        None, ge=0, le=MAX_WEIGHT, description="The budget of a group not named; 0 = none."
    )

    _group_names = field_validator("groups")(_names)
    _a_json_integer = field_validator("default_group_budget", mode="before")(_json_integer)


class WeightsIn(BaseModel):
    """Each table given replaces the current one whole; one left out is kept. A host, VM
    or policy not named has weight 1."""

    model_config = ConfigDict(extra="forbid")

    hosts: dict[str, Weight] | None = Field(
        None, max_length=MAX_ENTRIES, json_schema_extra=NAME_KEYS
    )
    vms: dict[str, Weight] | None = Field(
        None, max_length=MAX_ENTRIES, json_schema_extra=VM_KEYS, description='Keyed "host/vm".'
    )
    policies: dict[str, Weight] | None = Field(
        None, max_length=MAX_ENTRIES, json_schema_extra=NAME_KEYS
    )

    _names = field_validator("hosts", "policies")(_names)

    @field_validator("vms")
    @classmethod
    def _host_slash_vm(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        for key in value or {}:
            host, sep, vm = key.partition("/")
            if not (sep and is_valid_name(host) and is_valid_name(vm)):
                raise ValueError(f"{key!r} is not host/vm (two valid names)")
        return value

    def vm_table(self) -> dict[tuple[str, str], int] | None:
        if self.vms is None:
            return None
        return {(k.partition("/")[0], k.partition("/")[2]): w for k, w in self.vms.items()}


def weights_out(weights: Weights) -> dict[str, dict[str, int]]:
    return {
        "hosts": dict(weights.hosts),
        "vms": {f"{host}/{vm}": w for (host, vm), w in weights.vms.items()},
        "policies": dict(weights.policies),
    }


class ResetIn(BaseModel):
    """Back to the settings (the log's :data:`shared.control_log.RESET`)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Target:
    """What a change acts on."""

    state: DispatcherState[Any]
    #: the settings a reset goes back to (None: no reset comes, a single dispatcher's)
    settings: DispatcherSettings | None = None
    #: a shard's global MAX_PARALLEL, which its rounds split (None: a single dispatcher,
    #: whose own limit it is)
    global_limit: Callable[[], int] | None = None
    set_global_limit: Callable[[int], None] | None = None


Applier = Callable[[Target, Any], Any]
#: section -> (its body's model, how it is applied)
CONTROLS: dict[str, tuple[type[BaseModel], Applier]] = {}


def control(section: str, model: type[BaseModel]) -> Callable[[Applier], Applier]:
    def register(applier: Applier) -> Applier:
        CONTROLS[section] = (model, applier)
        return applier

    return register


@control("limits", LimitsIn)
def _limits(target: Target, body: LimitsIn) -> dict[str, int]:
    changes = body.model_dump(exclude_none=True)
    if target.set_global_limit is not None and "max_parallel" in changes:
        target.set_global_limit(changes.pop("max_parallel"))
    limits = target.state.set_limits(changes)
    if target.global_limit is not None:
        limits["max_parallel"] = target.global_limit()
    return limits


@control("named", NamedLimitsIn)
def _named(target: Target, body: NamedLimitsIn) -> dict[str, Any]:
    actions = None if body.actions is None else {a.value: n for a, n in body.actions.items()}
    return target.state.set_named_limits(actions, body.groups, body.default_group_budget)


@control("classes", ClassesIn)
def _classes(target: Target, body: ClassesIn) -> dict[str, Any]:
    return target.state.set_classes(body.policies, body.min_shares)


@control("weights", WeightsIn)
def _weights(target: Target, body: WeightsIn) -> dict[str, dict[str, int]]:
    return weights_out(target.state.set_weights(body.hosts, body.vm_table(), body.policies))


@control(control_log.RESET, ResetIn)
def _reset(target: Target, body: ResetIn) -> None:
    settings, state = target.settings, target.state
    if settings is None:
        return
    if target.set_global_limit is not None:
        target.set_global_limit(settings.max_parallel)
    else:
        state.set_limits({"max_parallel": settings.max_parallel})
    state.set_limits({"per_vm": settings.per_vm_limit, "per_host": settings.per_host_limit})
    named = settings.named_limits
    state.set_named_limits(dict(named.actions), dict(named.groups), named.default_group)
    classes = settings.classes
    state.set_classes(classes.policies, classes.min_shares)
    weights = settings.weights
    state.set_weights(weights.hosts, weights.vms, weights.policies)


def apply(target: Target, section: str, body: Mapping[str, Any]) -> Any:
    """Apply a change read from the log (its body as JSON)."""
    model, applier = CONTROLS[section]
    return applier(target, model.model_validate(body))


class Controls(Protocol):
    def submit(self, section: str, body: BaseModel) -> Any:
        """Apply the change (validated already); returns the route's answer."""


@dataclass(frozen=True)
class LocalControls:
    """A single dispatcher's: the change acts on this process only."""

    target: Target

    def submit(self, section: str, body: BaseModel) -> Any:
        return CONTROLS[section][1](self.target, body)


@dataclass(frozen=True)
class SharedControls:
    """A shard's: the change goes to the ledger's log (every shard applies it at its next
    round), then here at once."""

    target: Target
    engine: sa.Engine

    def submit(self, section: str, body: BaseModel) -> Any:
        with self.engine.begin() as conn:
            control_log.append(conn, section, body.model_dump(mode="json"))
        return CONTROLS[section][1](self.target, body)
