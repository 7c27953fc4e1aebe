"""Ingest: events/s the producer accepts (202 after every confirm), concurrent clients
posting batches of 100. Producer alone: nothing consumes meanwhile."""

from __future__ import annotations

from typing import Any

from bench.common import carousel, count_status, post_all
from bench.report import save


def run(n: int = 20_000, batch: int = 100, clients: tuple[int, ...] = (1, 4, 8)) -> None:
    rows: list[dict[str, Any]] = []
    for c in clients:
        events = [
            {"host": f"h{i % 20}", "vm": f"vm{i % 1000}", "policy": "p", "action": "heal"}
            for i in range(n)
        ]
        batches = [events[i : i + batch] for i in range(0, n, batch)]
        with carousel() as (stack, store):
            stack.producer()
            post_all(stack.producer_url, batches[:10], clients=1)  # warm: declare the keys
            warm = 10 * batch
            took = post_all(stack.producer_url, batches[10:], clients=c)
            assert count_status(store, "queued") == n
        rows.append(
            {
                "clients": c,
                "batch": batch,
                "events": n - warm,
                "seconds": took,
                "events/s": (n - warm) / took,
            }
        )
    save("ingest", f"Ingest: POST /events in batches of {batch}, 202 after broker confirms", rows)


if __name__ == "__main__":
    run()
