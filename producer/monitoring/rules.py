"""The monitoring policies file (``POLICIES_FILE``, see ``policies.example.yaml``): its
schema, and loading it.

Each entry's ``kind`` names a policy kind registered in the entry-point group
``carousel.policies`` (Carousel's own — ``auto_heal``, ``host_maintenance``,
``autoscale`` — as an installed plug-in's); the kind's config model validates the rest
of the entry.

A mistake in the file stops the producer at start with one line per problem, each naming
the file and the field (``policies.yaml: policies[1].debounce: ...``): a policy that
silently does nothing, or does the wrong thing, is found far later and at a worse time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from producer.monitoring.kind import PolicyConfig, PolicyKind
from shared.plugins import BrokenPlugin, Registry, UnknownPlugin

GROUP = "carousel.policies"
REGISTRY: Registry[PolicyKind[Any]] = Registry(GROUP, PolicyKind, "policy kind")


class PolicyFileError(ValueError):
    """The policies file is missing, unreadable or invalid; the message says where."""


@dataclass(frozen=True)
class Rules:
    """The policies, validated: each entry's config, and the kind that runs it (looked
    up by the config's ``kind`` when the rules are made, so the pure policies never
    touch the registry)."""

    policies: tuple[PolicyConfig, ...] = ()
    kinds: tuple[type[PolicyKind[Any]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [r.name for r in self.policies]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate policy names in {names}")
        object.__setattr__(self, "kinds", tuple(map(kind_of, self.policies)))


def kind_of(config: PolicyConfig) -> type[PolicyKind[Any]]:
    """The kind registered under ``config.kind``, which must take ``config``'s model."""
    kind = REGISTRY.load(config.kind)
    if not isinstance(config, kind.config_model):
        raise ValueError(
            f"policy {config.name!r}: kind {config.kind!r} takes a "
            f"{kind.config_model.__name__}, not a {type(config).__name__}"
        )
    return kind


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
    rules: list[PolicyConfig] = []
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"policies[{i}]"
        kind = item.get("kind")
        if not isinstance(kind, str):
            problem = "missing" if kind is None else f"unknown kind {kind!r}"
            raise PolicyFileError(f"{source}: {where}.kind: {problem}; expected one of {_kinds()}")
        try:
            model = REGISTRY.load(kind).config_model
        except UnknownPlugin as exc:
            raise PolicyFileError(
                f"{source}: {where}.kind: unknown kind {kind!r}; expected one of "
                f"{', '.join(exc.known)} (or install the package that provides it)"
            ) from None
        except BrokenPlugin as exc:
            raise PolicyFileError(f"{source}: {where}.kind: {exc}") from None
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
    return ", ".join(REGISTRY.names())
