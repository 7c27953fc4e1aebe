"""Why a held head waits, pure: a registry of checks, asked in order; the first that
finds its reason answers, else the head is next in turn (docs/design.md §7).

Each check reads the dispatcher's counts and the round-robin's flags for the head's own
key, VM, host and class only: O(1) (a key's held heads, at most PREFETCH, are read for
its position), whatever the number of keys.

A new limit plugs in as one more check (and one more :class:`~shared.waiting.Reason`),
as the per-action limit and the per-group disruption budget do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.models import VmEventMessage
from shared.priority import Priority
from shared.waiting import ClassState, Reason, Waiting, behind

if TYPE_CHECKING:
    from scheduler.dispatcher.dispatcher import Dispatcher

SOURCE = "dispatcher"

#: a check: the reason the dispatcher's state gives for the held head, or None
Check = Callable[["Dispatcher[Any]", VmEventMessage], Waiting | None]


def paused(d: Dispatcher[Any], e: VmEventMessage) -> Waiting | None:
    if not d.paused:
        return None
    return Waiting(
        reason=Reason.PAUSED,
        text="the dispatcher is paused (POST /resume on its admin API resumes it)",
        source=SOURCE,
    )


def host_unavailable(d: Dispatcher[Any], e: VmEventMessage) -> Waiting | None:
    if d.rr.host_available(e.host):
        return None
    return Waiting(
        reason=Reason.HOST_UNAVAILABLE, text=f"host {e.host} is unavailable", source=SOURCE
    )


def vm_unavailable(d: Dispatcher[Any], e: VmEventMessage) -> Waiting | None:
    if d.rr.vm_available(e.host, e.vm):
        return None
    return Waiting(
        reason=Reason.VM_UNAVAILABLE,
        text=f"VM {e.vm} on host {e.host} is unavailable",
        source=SOURCE,
    )


def behind_in_key(d: Dispatcher[Any], e: VmEventMessage) -> Waiting | None:
    """Another head of the same key is held before it (PREFETCH above 1)."""
    ids = [held.event.id for held in d.rr.key_items(e.host, e.vm, e.policy)]
    if not ids or ids[0] == e.id or e.id not in ids:
        return None
    return behind(e.host, e.vm, e.policy, ids.index(e.id), ids[0], SOURCE)


def vm_busy(d: Dispatcher[Any], e: VmEventMessage) -> Waiting | None:
    busy = d.on_vm(e.host, e.vm)
    limit = d.limits.per_vm
    if len(busy) < limit:
        return None
    return Waiting(
        reason=Reason.VM_BUSY,
        text=f"VM {e.vm} busy with {busy[0]}"
        + (f" and {len(busy) - 1} more" if len(busy) > 1 else "")
        + f" ({len(busy)}/{limit} per VM)",
        source=SOURCE,
        event=busy[0],
        in_use=len(busy),
        limit=limit,
    )


def host_limit(d: Dispatcher[Any], e: VmEventMessage) -> Waiting | None:
    limit = d.limits.per_host
    n = d.host_in_flight(e.host)
    if not limit or n < limit:
        return None
    return Waiting(
        reason=Reason.HOST_LIMIT,
        text=f"host {e.host} at its limit: {n}/{limit} actions at once (PER_HOST_LIMIT)",
        source=SOURCE,
        in_use=n,
        limit=limit,
    )


def _named_limit(kind: str, reason: Reason, setting: str) -> Check:
    """The check of one kind of named limit (docs/design.md §5.3): whether it is what
    holds the head (the head's action at its limit, or its group at its budget)."""

    def check(d: Dispatcher[Any], e: VmEventMessage) -> Waiting | None:
        for hold in d.named.holds((e.host, e.vm), e.action.value, e.group):
            if hold.kind == kind:
                used, limit = d.named.usage(hold)
                return Waiting(
                    reason=reason,
                    text=f"{d.named.describe(hold)} ({setting})",
                    source=SOURCE,
                    in_use=used,
                    limit=limit,
                )
        return None

    return check


action_limit = _named_limit("action", Reason.ACTION_LIMIT, "ACTION_LIMITS")
group_budget = _named_limit("group", Reason.GROUP_BUDGET, "GROUP_BUDGETS")


def global_limit(d: Dispatcher[Any], e: VmEventMessage) -> Waiting | None:
    limit = d.limits.max_parallel
    n = len(d.in_flight)
    if n < limit:
        return None
    return Waiting(
        reason=Reason.GLOBAL_LIMIT,
        text=f"all slots busy: {n}/{limit} actions in flight (MAX_PARALLEL)",
        source=SOURCE,
        in_use=n,
        limit=limit,
    )


def class_behind(d: Dispatcher[Any], e: VmEventMessage) -> Waiting | None:
    cls = d.rr.home(e.host, e.vm, e.policy) or d.class_of(e)
    above = d.rr.waits_behind(cls)
    if not above:
        return None
    states = d.rr.class_states()
    mine = states[cls.value]
    ahead = ", ".join(f"{c.value} ({states[c.value]['ready_keys']} keys ready)" for c in above)
    share = f"{mine['min_share']:.0%}"
    return Waiting(
        reason=Reason.CLASS_BEHIND,
        text=f"its class {cls.value} waits behind {ahead}; {cls.value} still gets its "
        f"minimum share of {share} (credit {mine['credit']:g})",
        source=SOURCE,
        priority=cls.value,
        classes={name: ClassState.model_validate(s) for name, s in states.items()},
    )


def next_in_turn(d: Dispatcher[Any], e: VmEventMessage) -> Waiting:
    """Nothing holds it: the round-robin reaches its key in turn."""
    cls: Priority = d.rr.home(e.host, e.vm, e.policy) or d.class_of(e)
    others = max(d.rr.ready_in(cls) - 1, 0)
    return Waiting(
        reason=Reason.NEXT_IN_TURN,
        text=f"next in turn: nothing holds it; its key is served in turn with {others} "
        f"other ready key{'' if others == 1 else 's'} of class {cls.value}",
        source=SOURCE,
        priority=cls.value,
    )


#: the checks, in order: the first reason found is the answer
CHECKS: list[Check] = [
    paused,
    host_unavailable,
    vm_unavailable,
    behind_in_key,
    vm_busy,
    host_limit,
    action_limit,
    group_budget,
    global_limit,
    class_behind,
]


def why(d: Dispatcher[Any], e: VmEventMessage) -> Waiting:
    """The first reason of :data:`CHECKS` for the held head ``e``, else next in turn."""
    for check in CHECKS:
        found = check(d, e)
        if found is not None:
            return found
    return next_in_turn(d, e)
