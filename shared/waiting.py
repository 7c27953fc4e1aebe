"""Why a queued event waits: the kinds of reason, and the answer the dispatcher's admin
API and the producer's ``GET /events/{id}`` share (docs/design.md §4, §7).

The kinds are an open set: a service names one with its text, and a client that does
not know a kind shows the text. A new limit adds its member here, its title in
:data:`TITLES`, and its check in the dispatcher's registry
(:data:`scheduler.dispatcher.waiting.CHECKS`).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Reason(StrEnum):
    """What holds a queued event, most fundamental first."""

    #: the ledger's
    PAUSED = "paused"
    HOST_UNAVAILABLE = "host_unavailable"
    VM_UNAVAILABLE = "vm_unavailable"
    BEHIND_IN_KEY = "behind_in_key"
    #: the dispatcher's, for a head it holds
    VM_BUSY = "vm_busy"
    HOST_LIMIT = "host_limit"
    ACTION_LIMIT = "action_limit"
    GROUP_BUDGET = "group_budget"
    GLOBAL_LIMIT = "global_limit"
    CLASS_BEHIND = "class_behind"
    NEXT_IN_TURN = "next_in_turn"
    #: no dispatcher holds the event (none runs, or it has not reached it yet)
    NOT_HELD = "not_held"
    #: the producer could not ask the dispatcher
    DISPATCHER_UNREACHABLE = "dispatcher_unreachable"


#: a short title of each kind, for counts (``carousel watch``)
TITLES: dict[Reason, str] = {
    Reason.PAUSED: "paused",
    Reason.HOST_UNAVAILABLE: "host unavailable",
    Reason.VM_UNAVAILABLE: "VM unavailable",
    Reason.BEHIND_IN_KEY: "behind in its key",
    Reason.VM_BUSY: "VM busy",
    Reason.HOST_LIMIT: "host at its limit",
    Reason.ACTION_LIMIT: "action at its limit",
    Reason.GROUP_BUDGET: "group at its budget",
    Reason.GLOBAL_LIMIT: "all slots busy",
    Reason.CLASS_BEHIND: "class behind a higher one",
    Reason.NEXT_IN_TURN: "next in turn",
    Reason.NOT_HELD: "not held by a dispatcher",
    Reason.DISPATCHER_UNREACHABLE: "dispatcher unreachable",
}


def title(kind: str) -> str:
    """The kind's title; the kind itself for one this version does not know."""
    try:
        return TITLES[Reason(kind)]
    except (ValueError, KeyError):
        return kind.replace("_", " ")


class ClassState(BaseModel):
    """A class's state as the dispatcher sees it, for ``class_behind``."""

    ready_keys: int = Field(description="Keys of this class with a held head.")
    min_share: float = Field(description="Its minimum share of the dispatches.")
    credit: float = Field(description="Its credit, in dispatches: served at 1 or more.")


class Waiting(BaseModel):
    """What holds a queued event: one reason, the most fundamental that applies."""

    model_config = ConfigDict(frozen=True)

    reason: str = Field(
        description="The kind, one of: " + ", ".join(r.value for r in Reason) + ". An "
        "open set: more kinds may come (a client shows the text of one it does not know)."
    )
    text: str = Field(description="The reason in words, for people.")
    source: str = Field(
        description="Who said it: ledger (the producer's reading of the ledger), "
        "dispatcher (the dispatcher holding the event) or producer (the dispatcher could "
        "not be asked)."
    )
    event: str | None = Field(
        None,
        description="The event it waits for: the head of its key (behind_in_key), the "
        "event in action on its VM (vm_busy).",
    )
    ahead: int | None = Field(
        None, description="behind_in_key: events of its key accepted before it, not yet dispatched."
    )
    in_use: int | None = Field(
        None, description="A limit's reasons: actions in flight that count against it."
    )
    limit: int | None = Field(None, description="A limit's reasons: the limit.")
    priority: str | None = Field(None, description="The class its key is served in.")
    classes: dict[str, ClassState] | None = Field(
        None, description="class_behind: every class's state, highest first."
    )


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``22nd``..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def key_text(host: str, vm: str, policy: str) -> str:
    return f"host {host}, vm {vm}, policy {policy}"


def behind(host: str, vm: str, policy: str, ahead: int, head: str, source: str) -> Waiting:
    """Behind ``ahead`` earlier events of its key, ``head`` first of them."""
    return Waiting(
        reason=Reason.BEHIND_IN_KEY,
        text=f"{ordinal(ahead + 1)} in its key ({key_text(host, vm, policy)}): behind {head}"
        + (f" and {ahead - 1} more" if ahead > 1 else ""),
        source=source,
        event=head,
        ahead=ahead,
    )
