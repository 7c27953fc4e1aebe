"""Events as the command line builds them: read from a JSON or CSV file, or made up as a
demo burst. Pure: no I/O beyond reading the file it is given."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carousel_cli.errors import InputError

#: the fields an event may carry (the producer's VmEventIn)
FIELDS = ("host", "vm", "policy", "action", "id", "payload")
REQUIRED = ("host", "vm", "policy", "action")
#: actions simcloud (the demo cloud) runs on an ACTIVE VM whatever its state before
DEMO_ACTIONS = ("heal", "update", "upgrade")

Event = dict[str, Any]


def read_events(path: Path) -> list[Event]:
    """The events of a ``.json`` file (one object or a list of them) or a ``.csv`` file
    (a header row naming the fields; ``payload`` as a JSON object)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    events = _from_csv(path, text) if path.suffix.lower() == ".csv" else _from_json(path, text)
    if not events:
        raise InputError(f"{path}: no events in it")
    return events


def _from_json(path: Path, text: str) -> list[Event]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno}: not JSON: {exc.msg}") from None
    items = data["events"] if isinstance(data, dict) and "events" in data else data
    items = [items] if isinstance(items, dict) else items
    if not isinstance(items, list):
        raise InputError(f"{path}: expected an event object or a list of them")
    return [_checked(item, f"{path}: event {n}") for n, item in enumerate(items, 1)]


def _from_csv(path: Path, text: str) -> list[Event]:
    reader = csv.DictReader(text.splitlines())
    unknown = sorted(set(reader.fieldnames or ()) - set(FIELDS))
    if unknown:
        raise InputError(f"{path}: line 1: unknown column(s) {', '.join(unknown)}")
    events = []
    for row in reader:
        where = f"{path}: line {reader.line_num}"
        event: Event = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        if "payload" in event:
            try:
                event["payload"] = json.loads(event["payload"])
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: payload is not JSON: {exc.msg}") from None
        events.append(_checked(event, where))
    return events


def _checked(item: Any, where: str) -> Event:
    if not isinstance(item, dict):
        raise InputError(f"{where}: not an object")
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [f for f in REQUIRED if not item.get(f)]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}")
    if "payload" in item and not isinstance(item["payload"], dict):
        raise InputError(f"{where}: payload must be a JSON object")
    return dict(item)


@dataclass(frozen=True)
class Burst:
    """A demo burst: ``events`` spread round-robin over ``hosts`` hosts of
    ``vms_per_host`` VMs each, named as simcloud names them (``h1``, ``h1-vm1``)."""

    events: int
    hosts: int = 3
    vms_per_host: int = 4
    policies: Sequence[str] = ("demo",)
    actions: Sequence[str] = DEMO_ACTIONS
    run: str = "demo"
    seed: int | None = None

    def make(self) -> list[Event]:
        rng = random.Random(self.seed)
        vms = [
            (f"h{h}", f"h{h}-vm{v}")
            for v in range(1, self.vms_per_host + 1)
            for h in range(1, self.hosts + 1)
        ]
        made = []
        for n in range(self.events):
            host, vm = vms[n % len(vms)]
            made.append(
                {
                    "host": host,
                    "vm": vm,
                    "policy": self.policies[n % len(self.policies)],
                    "action": rng.choice(list(self.actions))
                    if self.seed is not None
                    else self.actions[n % len(self.actions)],
                    "id": f"{self.run}-{n + 1}",
                }
            )
        return made


def slices(
    events: Sequence[Event], duration: float, per_second: int = 10
) -> Iterator[tuple[float, list[Event]]]:
    """``events`` cut into batches to post at even offsets (seconds from the start) over
    ``duration``: one batch when ``duration`` is 0."""
    count = max(1, int(duration * per_second))
    size = -(-len(events) // count)  # ceiling
    for n, start in enumerate(range(0, len(events), size)):
        yield (duration * n / count, list(events[start : start + size]))


def batches(events: Sequence[Event], size: int = 1000) -> Iterator[list[Event]]:
    """At most ``size`` events per POST (the producer's limit)."""
    for start in range(0, len(events), size):
        yield list(events[start : start + size])
