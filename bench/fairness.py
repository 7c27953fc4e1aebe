"""Fairness under a noisy neighbour: one VM floods 10,000 events, 500 other VMs post one
each, 5 ms actions, MAX_PARALLEL 8. The quiet VMs' wait (accept -> start), with and
without the flood, and the same workload on plain Celery (one FIFO queue). Then the
splitting case: one host spreads its flood over 200 VMs; the other hosts' share of
dispatches while everyone has work."""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import carousel, post_all, raw_celery_worker, wait_for
from bench.report import save
from shared.store import Store, events

PARALLEL = 8
ACTION_S = 0.005


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def quiet_events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "host": f"h{i % 10}",
            "vm": f"quiet{i}",
            "policy": "p",
            "action": "heal",
            "id": f"quiet-{i}",
        }
        for i in range(n)
    ]


def waits(store: Store, prefix: str) -> list[float]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.accepted_at, events.c.started_at).where(
                events.c.id.like(f"{prefix}%"), events.c.started_at.is_not(None)
            )
        ).all()
    return [r.started_at - r.accepted_at for r in rows]


def carousel_quiet_wait(flood: int, quiet: int, known: bool = False) -> dict[str, Any]:
    """``known``: the quiet VMs have had an event before (their queues exist, as for
    VMs a cloud has run for a while); else each is seen for the first time, and its
    wait includes creating its queue."""
    env = {
        "MAX_PARALLEL": PARALLEL,
        "WORKER_CONCURRENCY": PARALLEL,
        "SIMULATED_DURATION": ACTION_S,
        "DISPATCH_BATCH": 8,
    }
    with carousel(**env) as (stack, store):
        stack.producer()
        stack.dispatcher()
        stack.worker()
        if known:
            earlier = [{**e, "id": f"earlier-{e['id']}"} for e in quiet_events(quiet)]
            post_all(stack.producer_url, [earlier[i : i + 100] for i in range(0, quiet, 100)])
            wait_for(lambda: len(waits(store, "earlier-")) == quiet, 600, "earlier events ran")
        noisy = [
            {"host": "h0", "vm": "noisy", "policy": "p", "action": "heal"} for _ in range(flood)
        ]
        post_all(stack.producer_url, [noisy[i : i + 1000] for i in range(0, flood, 1000)])
        q = quiet_events(quiet)
        post_all(stack.producer_url, [q[i : i + 100] for i in range(0, quiet, 100)])
        wait_for(lambda: len(waits(store, "quiet-")) == quiet, 600, "quiet events started")
        w = waits(store, "quiet-")
    return {
        "system": f"carousel, quiet VMs {'known' if known else 'seen first'}",
        "flood": flood,
        "quiet VMs": quiet,
        "quiet wait p50 ms": 1000 * statistics.median(w),
        "quiet wait p99 ms": 1000 * pct(w, 0.99),
    }


def celery_quiet_wait(flood: int, quiet: int) -> dict[str, Any]:
    from bench.raw_celery import app

    queue = f"rawfair-{uuid.uuid4().hex[:8]}"
    log = Path(tempfile.mkdtemp()) / "starts.log"
    with raw_celery_worker(queue, PARALLEL, log):
        inspect = app.control.inspect(timeout=1)
        wait_for(lambda: bool(inspect.ping()), 60, "raw worker up")
        sent: dict[str, float] = {}
        with app.producer_or_acquire() as producer:
            for i in range(flood):
                app.send_task(
                    "rawbench.sleep",
                    args=[f"noisy-{i}", ACTION_S * 1000],
                    queue=queue,
                    producer=producer,
                )
            for i in range(quiet):
                sent[f"quiet-{i}"] = time.time()
                app.send_task(
                    "rawbench.sleep",
                    args=[f"quiet-{i}", ACTION_S * 1000],
                    queue=queue,
                    producer=producer,
                )

        def started() -> dict[str, float]:
            if not log.exists():
                return {}
            pairs = (line.split() for line in log.read_text().splitlines())
            return {tag: float(at) for tag, at in pairs if tag.startswith("quiet-")}

        wait_for(lambda: len(started()) == quiet, 600, "quiet tasks started")
        w = [started()[tag] - sent[tag] for tag in sent]
    return {
        "system": "plain celery (1 FIFO queue)",
        "flood": flood,
        "quiet VMs": quiet,
        "quiet wait p50 ms": 1000 * statistics.median(w),
        "quiet wait p99 ms": 1000 * pct(w, 0.99),
    }


def splitting_share(flood_vms: int = 200, per_vm: int = 20) -> dict[str, Any]:
    """Host A floods over many VMs; 10 other hosts have 2 events on each of 10 VMs."""
    env = {
        "MAX_PARALLEL": PARALLEL,
        "WORKER_CONCURRENCY": PARALLEL,
        "SIMULATED_DURATION": ACTION_S,
        "START_PAUSED": "true",
        "DISPATCH_BATCH": 8,
    }
    with carousel(**env) as (stack, store):
        stack.producer()
        stack.dispatcher()
        stack.worker()
        flood = [
            {"host": "A", "vm": f"a{v}", "policy": "p", "action": "heal"}
            for v in range(flood_vms)
            for _ in range(per_vm)
        ]
        others = [
            {"host": f"o{h}", "vm": f"o{h}v{v}", "policy": "p", "action": "heal"}
            for h in range(10)
            for v in range(10)
            for _ in range(2)
        ]
        post_all(stack.producer_url, [flood[i : i + 1000] for i in range(0, len(flood), 1000)])
        post_all(stack.producer_url, [others[i : i + 100] for i in range(0, len(others), 100)])
        import httpx

        held = flood_vms + 100
        wait_for(
            lambda: httpx.get(f"{stack.dispatcher_url}/stats").json()["held"] >= held,
            120,
            "heads held",
        )
        httpx.post(f"{stack.dispatcher_url}/resume")
        wait_for(lambda: _done(store, "o") == len(others), 300, "other hosts drained")
        dispatches = httpx.get(f"{stack.dispatcher_url}/dispatches", params={"limit": 10000}).json()
    # the window in which the other hosts still had work
    last_other = max(i for i, d in enumerate(dispatches) if d["host"] != "A")
    window = dispatches[: last_other + 1]
    share = sum(d["host"] != "A" for d in window) / len(window)
    return {
        "flooding host VMs": flood_vms,
        "flood events": len(flood),
        "other hosts": 10,
        "other events": len(others),
        "dispatches until others drained": len(window),
        "others' share": round(share, 3),
        "fair share (10 of 11 hosts)": round(10 / 11, 3),
    }


def _done(store: Store, host_prefix: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(events)
                .where(events.c.host.like(f"{host_prefix}%"), events.c.status == "succeeded")
            ).scalar_one()
        )


def run(flood: int = 10_000, quiet: int = 500) -> None:
    rows = [
        carousel_quiet_wait(0, quiet),
        carousel_quiet_wait(flood, quiet),
        carousel_quiet_wait(0, quiet, known=True),
        carousel_quiet_wait(flood, quiet, known=True),
        celery_quiet_wait(0, quiet),
        celery_quiet_wait(flood, quiet),
    ]
    p99 = [r["quiet wait p99 ms"] for r in rows]
    ratio = p99[1] / p99[0]
    # Carousel's quiet p99 against plain Celery's, under the flood and with none
    first = {"flooded": p99[1] / p99[5], "calm": p99[0] / p99[4]}
    known = {"flooded": p99[3] / p99[5], "calm": p99[2] / p99[4]}
    save(
        "fairness",
        "Noisy neighbour: quiet VMs' p99 wait, Carousel ÷ plain Celery under the flood / "
        f"with none: VMs seen first {first['flooded']:.2f} / {first['calm']:.1f}, known "
        f"{known['flooded']:.2f} / {known['calm']:.1f} (Carousel with/without flood = "
        f"{ratio:.2f})",
        rows,
        p99_ratio=ratio,
        vs_celery_seen_first=first,
        vs_celery_known=known,
    )
    save(
        "fairness_split", "Splitting flood: one host over 200 VMs vs 10 hosts", [splitting_share()]
    )


if __name__ == "__main__":
    run()
