"""Following events to the end: poll the unfinished ones, show a live progress bar with
the count of each status, then a table. The summaries are pure; :func:`watch` takes the
clock and the sleep so that it can be driven without waiting."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from carousel_cli.errors import InputError

#: what an id becomes once the producer has not known it for ``NOT_FOUND_AFTER`` seconds
#: (a 404 is ``unknown`` at first: an event another client is posting may not be visible
#: yet)
NOT_FOUND = "not found"
NOT_FOUND_AFTER = 5.0
#: an event in one of these will not change again
FINISHED = frozenset({"succeeded", "failed", "cancelled", NOT_FOUND})
#: the order statuses are shown in (the event's path)
ORDER = (
    "unknown",
    "queued",
    "dispatched",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    NOT_FOUND,
)


#: the most reasons shown for the queued events, most common first
REASONS_SHOWN = 3


class Seen(NamedTuple):
    """An event's status and, while it is queued, what holds it (``GET /events/{id}``'s
    ``waiting``: its kind's title and its text)."""

    status: str
    reason: str | None = None
    text: str | None = None


def waiting_line(reasons: Mapping[str, tuple[str, str]]) -> str:
    """What holds the queued events: one event's text, or the most common reasons with
    their counts (``behind in its key 10, VM busy 2``); empty for none."""
    if not reasons:
        return ""
    if len(reasons) == 1:
        return next(iter(reasons.values()))[1]
    counts = Counter(kind for kind, _ in reasons.values())
    shown = [f"{kind} {n}" for kind, n in counts.most_common(REASONS_SHOWN)]
    more = len(counts) - REASONS_SHOWN
    return ", ".join(shown) + (f", {more} other reason{'s' * (more > 1)}" if more > 0 else "")


def summary(statuses: Mapping[str, str]) -> Counter[str]:
    return Counter(statuses.values())


def finished(statuses: Mapping[str, str]) -> int:
    return sum(status in FINISHED for status in statuses.values())


def describe(counts: Counter[str], reasons: Mapping[str, tuple[str, str]] | None = None) -> str:
    """``queued 12 · running 4 · succeeded 80``: the non-zero counts, in path order;
    with ``reasons`` (of the queued events), what holds them after the queued count:
    ``queued 12 (behind in its key 10, VM busy 2) · running 4``."""
    names = [*ORDER, *sorted(set(counts) - set(ORDER))]
    why = waiting_line(reasons or {})
    return " · ".join(
        f"{name} {counts[name]}" + (f" ({why})" if name == "queued" and why else "")
        for name in names
        if counts[name]
    )


def outcome(statuses: Mapping[str, str]) -> int:
    """The exit code: 0 when every event succeeded (or was cancelled: an operator's
    choice, not a failure), 1 when any failed (or was not found), 3 when some are not
    finished."""
    if finished(statuses) < len(statuses):
        return 3
    return 0 if all(s in ("succeeded", "cancelled") for s in statuses.values()) else 1


def watch(
    poll: Callable[[Sequence[str]], Mapping[str, str | Seen]],
    ids: Sequence[str],
    console: Console,
    timeout: float,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    not_found_after: float = NOT_FOUND_AFTER,
) -> dict[str, str]:
    """Poll the unfinished of ``ids`` every ``interval`` until all are finished or
    ``timeout`` seconds passed; the last status of each. ``poll`` says ``unknown`` for an
    id the producer does not know; after ``not_found_after`` seconds of that it is
    ``not found``. A :class:`Seen` with a reason shows, beside the queued count, what
    holds the queued events."""
    statuses = dict.fromkeys(ids, "unknown")
    reasons: dict[str, tuple[str, str]] = {}  # queued id -> (kind's title, text)
    unknown_since: dict[str, float] = {}
    deadline = clock() + timeout
    columns = (
        TextColumn("[bold]{task.fields[counts]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("events", total=len(ids), counts="")
        while True:
            pending = [i for i, s in statuses.items() if s not in FINISHED]
            for event_id, answer in poll(pending).items():
                said = answer if isinstance(answer, str) else answer.status
                if isinstance(answer, Seen) and answer.reason and answer.text:
                    reasons[event_id] = (answer.reason, answer.text)
                else:
                    reasons.pop(event_id, None)
                if said == "unknown":
                    since = unknown_since.setdefault(event_id, clock())
                    said = NOT_FOUND if clock() - since >= not_found_after else said
                statuses[event_id] = said
            counts = describe(summary(statuses), reasons)
            progress.update(task, completed=finished(statuses), counts=counts)
            if finished(statuses) == len(statuses) or clock() >= deadline:
                return statuses
            sleep(interval)


def table(statuses: Mapping[str, str]) -> Table:
    """The count of each status."""
    out = Table(
        title=f"{len(statuses)} event{'' if len(statuses) == 1 else 's'}", title_justify="left"
    )
    out.add_column("status")
    out.add_column("events", justify="right")
    counts = summary(statuses)
    for name in [*ORDER, *sorted(set(counts) - set(ORDER))]:
        if counts[name]:
            out.add_row(name, str(counts[name]))
    return out


def failures(errors: Mapping[str, str]) -> Table:
    """The failed (or not found) events, the first 20, and why each failed."""
    out = Table(title="failed", title_justify="left", title_style="red")
    out.add_column("event")
    out.add_column("why")
    for event_id, why in list(errors.items())[:20]:
        out.add_row(event_id, Text(why))
    return out


# -- the last batch: what `carousel watch` follows when given no ids ----------------------
def last_batch_file() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "carousel" / "last-batch.json"


def save_last_batch(ids: Sequence[str]) -> str | None:
    """Keep ``ids`` for ``carousel watch``; None when kept, else why not (an unwritable
    cache directory must not fail a post that succeeded)."""
    path = last_batch_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"ids": list(ids)}))
    except OSError as exc:
        return f"could not keep the ids for `carousel watch` in {path}: {exc.strerror or exc}"
    return None


def load_batch(path: Path | None = None) -> list[str]:
    path = path or last_batch_file()
    try:
        ids = json.loads(path.read_text())["ids"]
    except FileNotFoundError:
        raise InputError(f"no batch to watch ({path} does not exist): post or demo first") from None
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path} is not a batch file (JSON with an `ids` list)") from None
    return [str(i) for i in ids]
