"""Urgent work first, and shares an operator can set (docs/design.md §5.1-5.2).

(a) A rolling upgrade (``background``) of every VM on 50 hosts saturates MAX_PARALLEL,
its actions taking 0.5 to 1.5 s (spread, as real upgrades are: with one duration for all
they would run in lock-step waves, and the heals' wait would depend on where in a wave
they arrive); then one more host fails and its 20 VMs' heals (``urgent``, 1 s each)
arrive. The time from the
heals' acceptance until the last of them is dispatched, against the same heals on an idle
stack, and the upgrade's share of the dispatches meanwhile (its minimum share is
CLASS_MIN_SHARES' background). Run at two MAX_PARALLEL: the heals wait for the upgrade's
actions to end (nothing is pre-empted), so the ratio depends on how many slots free up per
action time.

(b) Three hosts flood with host weights 1 : 2 : 4: each host's share of the dispatches
while all three have work, against its weight; and again with the heaviest host's flood
spread over 100 VMs (the others over 20)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import httpx
import sqlalchemy as sa

from bench.common import carousel, post_all, wait_for
from bench.report import save
from shared.store import Store, events

#: seconds every simulated action takes in (a): long against a dispatch's own latency
ACTION_S = 1.0
HEALS = 20
UPGRADE_HOSTS = 50
UPGRADE_VMS = 20  # per host
WEIGHTS = {"a": 1, "b": 2, "c": 4}


def _stats(stack: Any) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{stack.dispatcher_url}/stats", timeout=10).json()
    return body


def _heal_times(store: Store) -> tuple[float, float] | None:
    """(first heal accepted, last heal dispatched), once every heal is dispatched."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.accepted_at, events.c.dispatched_at).where(
                events.c.id.like("heal-%")
            )
        ).all()
    if len(rows) < HEALS or any(r.dispatched_at is None for r in rows):
        return None
    return min(r.accepted_at for r in rows), max(r.dispatched_at for r in rows)


def _warm_up(stack: Any, store: Store, parallel: int) -> None:
    """Instant events on other keys first, until they have all succeeded: both runs then
    start from a stack that has dispatched and run actions (workers started, connections
    open), not from a cold one."""
    warm = [
        {
            "host": "warm",
            "vm": f"warm-vm{i}",
            "policy": "ops",
            "action": "update",
            "id": f"warm-{i}",
            "payload": {"simulate": {"duration": 0}},
        }
        for i in range(2 * parallel)
    ]
    post_all(stack.producer_url, [warm], clients=1)

    def done() -> bool:
        with store.engine.connect() as conn:
            n = conn.execute(
                sa.select(sa.func.count())
                .select_from(events)
                .where(events.c.id.like("warm-%"), events.c.status == "succeeded")
            ).scalar_one()
        return int(n) == len(warm)

    wait_for(done, 120, "the warm-up events succeeded")


def heals(parallel: int, flood: bool) -> dict[str, Any]:
    env = {
        "MAX_PARALLEL": parallel,
        "WORKER_CONCURRENCY": parallel,
        "SIMULATED_DURATION": ACTION_S,
    }
    with carousel(**env) as (stack, store):
        stack.producer()
        stack.dispatcher()
        stack.worker()
        _warm_up(stack, store, parallel)
        if flood:
            spread = random.Random(parallel)
            upgrades = [
                {
                    "host": f"h{h}",
                    "vm": f"h{h}-vm{v}",
                    "policy": "upgrade",
                    "action": "upgrade",
                    "priority": "background",
                    "payload": {"simulate": {"duration": round(spread.uniform(0.5, 1.5), 3)}},
                }
                for v in range(UPGRADE_VMS)
                for h in range(UPGRADE_HOSTS)
            ]
            post_all(stack.producer_url, [upgrades[i : i + 500] for i in range(0, 1000, 500)])
            # saturated, and past the first wave: the actions in flight end at spread times
            wait_for(
                lambda: (
                    _stats(stack)["dispatched_total"] >= 3 * parallel
                    and _stats(stack)["in_flight"] == parallel
                ),
                120,
                "the upgrade saturating MAX_PARALLEL",
            )
        failed = [
            {
                "host": "failed",
                "vm": f"failed-vm{i}",
                "policy": "auto-heal",
                "action": "heal",
                "priority": "urgent",
                "id": f"heal-{i}",
            }
            for i in range(HEALS)
        ]
        post_all(stack.producer_url, [failed], clients=1)
        wait_for(lambda: _heal_times(store) is not None, 300, "every heal dispatched")
        times = _heal_times(store)
        assert times is not None
        since, until = times
        log = httpx.get(
            f"{stack.dispatcher_url}/dispatches", params={"limit": 10000}, timeout=10
        ).json()
    # the dispatches from the heals' acceptance to the last heal's, by the dispatch log's
    # own times (the ledger's are taken a moment later, in the dispatch's transaction)
    last_heal = max(d["at"] for d in log if d["event_id"].startswith("heal-"))
    window = [d for d in log if since <= d["at"] <= last_heal]
    upgrades_meanwhile = sum(d["action"] == "upgrade" for d in window)
    return {
        "MAX_PARALLEL": parallel,
        "upgrade running": flood,
        "action s": ACTION_S,
        "heals": HEALS,
        "until all heals dispatched s": round(until - since, 3),
        "dispatches meanwhile": len(window),
        "upgrade share meanwhile": round(upgrades_meanwhile / len(window), 3) if window else 0.0,
    }


def weighted_shares(split_vms: int) -> dict[str, Any]:
    """Hosts a, b, c with weights 1 : 2 : 4 flood, c over ``split_vms`` VMs, a and b over
    20; each host's share of the dispatches until the first host runs out of work."""
    env = {
        "MAX_PARALLEL": 8,
        "WORKER_CONCURRENCY": 8,
        "SIMULATED_DURATION": 0.005,
        "START_PAUSED": "true",
        "HOST_WEIGHTS": ",".join(f"{h}={w}" for h, w in WEIGHTS.items()),
    }
    per_host = {"a": 200, "b": 400, "c": 800}
    vms = {"a": 20, "b": 20, "c": split_vms}
    with carousel(**env) as (stack, _store):
        stack.producer()
        stack.dispatcher()
        stack.worker()
        flood = [
            {"host": h, "vm": f"{h}-vm{i % vms[h]}", "policy": "update", "action": "update"}
            for h, n in per_host.items()
            for i in range(n)
        ]
        post_all(stack.producer_url, [flood[i : i + 500] for i in range(0, len(flood), 500)])
        heads = sum(min(n, vms[h]) for h, n in per_host.items())
        wait_for(lambda: _stats(stack)["held"] >= heads, 120, "a head of every key held")
        httpx.post(f"{stack.dispatcher_url}/resume", timeout=10)
        total = sum(per_host.values())
        wait_for(lambda: _stats(stack)["dispatched_total"] >= total, 600, "every event dispatched")
        log = httpx.get(
            f"{stack.dispatcher_url}/dispatches", params={"limit": 10000}, timeout=10
        ).json()
    # the window in which every host still had work: up to the last dispatch of the
    # host that ran out first
    ends = {h: max(i for i, d in enumerate(log) if d["host"] == h) for h in WEIGHTS}
    window = log[: min(ends.values()) + 1]
    counts = Counter(d["host"] for d in window)
    total_weight = sum(WEIGHTS.values())
    row: dict[str, Any] = {"heaviest host's VMs": split_vms, "dispatches in window": len(window)}
    worst = 0.0
    for h, w in WEIGHTS.items():
        share = counts[h] / len(window)
        off = abs(share / (w / total_weight) - 1)
        worst = max(worst, off)
        row[f"{h} (weight {w}) share"] = round(share, 4)
    row["weights' shares"] = " / ".join(f"{w / total_weight:.4f}" for w in WEIGHTS.values())
    row["worst deviation %"] = round(100 * worst, 2)
    return row


def run() -> None:
    rows = []
    for parallel in (16, 10):
        alone = heals(parallel, flood=False)
        flooded = heals(parallel, flood=True)
        ratio = flooded["until all heals dispatched s"] / alone["until all heals dispatched s"]
        flooded["÷ no upgrade"] = round(ratio, 3)
        rows += [alone, flooded]
    ratios = {str(r["MAX_PARALLEL"]): r["÷ no upgrade"] for r in rows if "÷ no upgrade" in r}
    shares = {
        str(r["MAX_PARALLEL"]): r["upgrade share meanwhile"] for r in rows if r["upgrade running"]
    }
    weights = [weighted_shares(20), weighted_shares(100)]
    save(
        "urgency",
        "Urgent heals under a background upgrade flood, ÷ the same heals alone, at "
        f"MAX_PARALLEL {' / '.join(ratios)}: {' / '.join(f'{v:.2f}' for v in ratios.values())}; "
        "host weights 1 : 2 : 4, worst deviation of a share from its weight "
        f"{max(r['worst deviation %'] for r in weights):.1f} %",
        rows,
        heal_ratios=ratios,
        upgrade_shares=shares,
        background_min_share=0.1,
        weights=weights,
    )
    save(
        "urgency_weights",
        "Host weights 1 : 2 : 4 on three flooding hosts, the heaviest over 20 VMs, then 100",
        weights,
    )


if __name__ == "__main__":
    run()
