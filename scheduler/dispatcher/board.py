"""The board: the carousel as an operator watches it (``GET /board``, the live page,
``carousel top``), pure: the dispatcher's state, each key's backlog and the time go in,
one JSON-ready view comes out.

Hosts are listed most backlog first and at most ``top`` of them; each listed host shows
its VMs and their policies while the detail budget (``DETAIL_KEYS`` keys in all) lasts,
so the answer stays small with 100,000 keys: a search (``query``, part of a host's name
or of ``host/vm``) narrows it. States are words, for people and for screen readers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.dispatcher import waiting
from scheduler.dispatcher.classes import ClassScheduler
from scheduler.dispatcher.dispatcher import Dispatcher
from scheduler.dispatcher.idle import KeyT

#: the most keys the board shows in detail (VMs and policies), over all hosts listed
DETAIL_KEYS = 500
#: the last dispatches the board shows
LAST_DISPATCHES = 20
#: the window the dispatch rate is measured over, seconds
RATE_WINDOW = 10.0


def state_words(stats: Mapping[str, Any]) -> str:
    """``active``; ``standby (another dispatcher leads)`` only when the ledger says another
    dispatcher holds the lease; else why it is not dispatching (``not_ready``: no broker,
    no ledger); a shard says which, and how many partitions it serves (the page shows
    only its hosts); then paused and a failing ledger."""
    shard = stats.get("shard")
    if stats.get("standby") and shard:
        words = [str(stats.get("not_ready") or "idle shard")]
    elif stats.get("standby"):
        words = ["standby (another dispatcher leads)"]
    elif stats.get("connected", True) and stats.get("active", True) and shard:
        served, of = len(shard.get("serving", ())), shard.get("partitions", 0)
        words = [f"active shard {shard.get('name')}, serving {served} of {of} partitions"]
    elif stats.get("connected", True) and stats.get("active", True):
        words = ["active"]
    else:
        words = [str(stats.get("not_ready") or "not dispatching")]
    if stats.get("paused"):
        words.append("paused")
    if stats.get("ledger_ok") is False:
        words.append("ledger failing")
    return ", ".join(words)


def activity(*, available: bool, paused: bool, in_flight: int, backlog: int) -> str:
    """A host's or VM's state in one word: unavailable, paused (work waits on the
    pause), busy (something in flight), waiting (work waits, nothing in flight), idle."""
    if not available:
        return "unavailable"
    if paused and backlog:
        return "paused"
    if in_flight:
        return "busy"
    return "waiting" if backlog else "idle"


@dataclass(frozen=True)
class Query:
    """What the board is asked for: hosts matching ``text``, at most ``top`` of them."""

    text: str = ""
    top: int = 25

    def vms(self, host: str, rr: ClassScheduler[Any]) -> list[str] | None:
        """The host's VMs that match; None for all of them (no search, or the host's
        name matches), without listing them."""
        if not self.text or self.text in host:
            return None
        prefix = f"{host}/"
        return [vm for vm in rr.vms(host) if self.text in prefix + vm]


@dataclass(frozen=True)
class Backlog:
    """Each key's events accepted and not yet dispatched (the ledger's count), and their
    sum per host, made once per reading so that a board adds nothing up per key."""

    keys: Mapping[KeyT, int]
    hosts: Mapping[str, int]

    @classmethod
    def of(cls, keys: Mapping[KeyT, int]) -> Backlog:
        hosts: Counter[str] = Counter()
        for (host, _, _), n in keys.items():
            hosts[host] += n
        return cls(keys, hosts)


#: no backlog known
NO_BACKLOG = Backlog({}, {})


def board(d: Dispatcher[Any], backlog: Backlog, now: float, query: Query) -> dict[str, Any]:
    """The board of ``d`` at ``now``. O(hosts + VMs) to rank the hosts, with cheap steps
    (the caller holds the dispatcher's lock); the detail is O(``DETAIL_KEYS``)."""
    rr = d.rr
    totals = {"hosts": 0, "vms": 0, "keys": 0, "backlog": 0, "held": 0, "in_flight": 0}
    rows: list[tuple[int, int, str, dict[str, Any], list[str] | None]] = []
    for ordinal, host in enumerate(rr.hosts()):
        vms, keys = rr.size(host)
        queued = backlog.hosts.get(host, 0)
        held = rr.held(host)
        flying = d.host_in_flight(host)
        totals["hosts"] += 1
        totals["vms"] += vms
        totals["keys"] += keys
        totals["backlog"] += queued
        totals["held"] += held
        totals["in_flight"] += flying
        shown = query.vms(host, rr)
        if shown is not None and not shown:
            continue
        available = rr.host_available(host)
        row = {
            "host": host,
            "available": available,
            "vms": vms,
            "keys": keys,
            "backlog": queued,
            "held": held,
            "in_flight": flying,
            "state": activity(
                available=available, paused=d.paused, in_flight=flying, backlog=queued
            ),
            "vms_shown": 0,
            "detail": None,
        }
        rows.append((-(queued + held + flying), ordinal, host, row, shown))
    rows.sort(key=lambda r: (r[0], r[1]))
    budget = DETAIL_KEYS
    hosts = []
    for _, _, host, row, shown in rows[: query.top]:
        detail = []
        for vm in rr.vms(host) if shown is None else shown:
            policies = rr.policies(host, vm)
            if len(policies) > budget:
                break
            budget -= len(policies)
            detail.append(_vm(d, host, vm, policies, backlog.keys))
        if detail:
            row["detail"], row["vms_shown"] = detail, len(detail)
        hosts.append(row)
    return {
        "at": now,
        "paused": d.paused,
        "totals": totals,
        "rate": {"window_seconds": RATE_WINDOW, "dispatched_per_second": _rate(d, now)},
        "limits": d.limits_use(),
        "dispatches": d.recent_dispatches(LAST_DISPATCHES),
        "query": query.text,
        "hosts_matching": len(rows),
        "hosts": hosts,
    }


def _vm(
    d: Dispatcher[Any], host: str, vm: str, policies: list[str], backlog: Mapping[KeyT, int]
) -> dict[str, Any]:
    rr = d.rr
    running = d.on_vm(host, vm)
    keys = [_key(d, host, vm, p, backlog.get((host, vm, p), 0)) for p in policies]
    queued = sum(k["backlog"] for k in keys)
    available = rr.host_available(host) and rr.vm_available(host, vm)
    return {
        "vm": vm,
        "available": available,
        "in_flight": len(running),
        "running": running,
        "backlog": queued,
        "held": sum(k["held"] for k in keys),
        "state": activity(
            available=available, paused=d.paused, in_flight=len(running), backlog=queued
        ),
        "policies": keys,
    }


def _key(d: Dispatcher[Any], host: str, vm: str, policy: str, queued: int) -> dict[str, Any]:
    items = d.rr.key_items(host, vm, policy)
    head = items[0].event if items else None
    home = d.rr.home(host, vm, policy)
    why = waiting.why(d, head) if head is not None else None
    return {
        "policy": policy,
        "backlog": queued,
        "held": len(items),
        "head": head.id if head is not None else None,
        "class": home.value if home is not None else None,
        "waiting": why.model_dump(exclude_none=True) if why is not None else None,
    }


def _rate(d: Dispatcher[Any], now: float) -> float:
    """Dispatches per second over the last ``RATE_WINDOW`` seconds of the log."""
    n = 0
    for dispatch in reversed(d.dispatches):
        if dispatch.at < now - RATE_WINDOW:
            break
        n += 1
    return round(n / RATE_WINDOW, 2)
