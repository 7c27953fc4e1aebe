"""The monitoring policies file (``POLICIES_FILE``, see ``policies.example.yaml``): its
schema, and loading it.

A mistake in the file stops the producer at start with one line per problem, each naming
the file and the field (``policies.yaml: policies[1].debounce: ...``): a policy that
silently does nothing, or does the wrong thing, is found far later and at a worse time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.models import Action
from shared.names import Name


class PolicyFileError(ValueError):
    """The policies file is missing, unreadable or invalid; the message says where."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the events' policy name: one queue per (host, VM, policy), so it must be a Name
    name: Name


class AutoHealRule(_Rule):
    kind: Literal["auto_heal"] = "auto_heal"
    #: seconds a VM must stay DOWN before it is healed: a reboot reports DOWN, then ACTIVE
    debounce: float = Field(15.0, ge=0)
    #: a VM healed less than this ago that goes DOWN again is left alone (0 = off)
    ignore_repeat_within: float = Field(180.0, ge=0)


class HostMaintenanceRule(_Rule):
    kind: Literal["host_maintenance"] = "host_maintenance"
    action: Literal["live_migrate", "migrate"] = "live_migrate"

    @property
    def event_action(self) -> Action:
        return Action(self.action)


class AutoscaleRule(_Rule):
    kind: Literal["autoscale"] = "autoscale"
    metric: Literal["cpu", "ram"] = "cpu"
    high: float = Field(0.8, gt=0, le=1)
    low: float = Field(0.2, ge=0, lt=1)
    cooldown: float = Field(60.0, ge=0)
    #: the pseudo-host whose queues hold the groups' scaling events (vm = the group)
    groups_host: Name = "vm-groups"
    #: the groups this rule scales; None = every group
    groups: tuple[Name, ...] | None = None

    @model_validator(mode="after")
    def _band(self) -> AutoscaleRule:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def covers(self, group: str) -> bool:
        return self.groups is None or group in self.groups


Rule = AutoHealRule | HostMaintenanceRule | AutoscaleRule

KINDS: dict[str, type[Rule]] = {
    "auto_heal": AutoHealRule,
    "host_maintenance": HostMaintenanceRule,
    "autoscale": AutoscaleRule,
}


@dataclass(frozen=True)
class Rules:
    policies: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        names = [r.name for r in self.policies]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate policy names in {names}")

    @property
    def auto_heal(self) -> list[AutoHealRule]:
        return [r for r in self.policies if isinstance(r, AutoHealRule)]

    @property
    def host_maintenance(self) -> list[HostMaintenanceRule]:
        return [r for r in self.policies if isinstance(r, HostMaintenanceRule)]

    @property
    def autoscale(self) -> list[AutoscaleRule]:
        return [r for r in self.policies if isinstance(r, AutoscaleRule)]


class _File(BaseModel):
    """The top level only: each policy is validated by its kind's model, so that an
    error names ``policies[1].debounce`` rather than pydantic's union branches."""

    model_config = ConfigDict(extra="forbid")

    policies: list[dict[str, Any]]


def load_rules(path: str | Path) -> Rules:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError(f"{path}: cannot read it: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{path}: not valid YAML: {exc}") from None
    return parse_rules(data, str(path))


def parse_rules(data: object, source: str) -> Rules:
    """``source`` names the file (or whatever the data came from) in the errors."""
    if not isinstance(data, dict):
        got = "nothing" if data is None else f"a {type(data).__name__}"
        raise PolicyFileError(f"{source}: expected a mapping with a 'policies' list, got {got}")
    try:
        items = _File.model_validate(data).policies
    except ValidationError as exc:
        raise PolicyFileError(_explain(source, "", exc)) from None
    rules: list[Rule] = []
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"policies[{i}]"
        kind = item.get("kind")
        model = KINDS.get(kind) if isinstance(kind, str) else None
        if model is None:
            problem = "missing" if kind is None else f"unknown kind {kind!r}"
            raise PolicyFileError(f"{source}: {where}.kind: {problem}; expected one of {_kinds()}")
        try:
            rule = model.model_validate(item)
        except ValidationError as exc:
            raise PolicyFileError(_explain(source, where, exc)) from None
        if rule.name in first:
            raise PolicyFileError(
                f"{source}: {where}.name: duplicate policy name {rule.name!r} "
                f"(policies[{first[rule.name]}] has it too)"
            )
        first[rule.name] = i
        rules.append(rule)
    return Rules(tuple(rules))


def _explain(source: str, where: str, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        path = where
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {path}: {message}" if path else f"{source}: {message}")
    return "\n".join(lines)


def _kinds() -> str:
    return ", ".join(KINDS)
