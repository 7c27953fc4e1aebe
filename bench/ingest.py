"""Ingest: events/s the producer accepts (202 after every confirm), concurrent clients
posting batches of 100, with PRODUCER_PROCESSES 1, 2 and 4 worker processes. Producer
alone: nothing consumes meanwhile. The ledger is BENCH_LEDGER's (sqlite or postgresql).

Request bodies are encoded before the clock starts, so the load generator (this
process, on the same machine) spends its CPU on HTTP alone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson

from bench.common import LEDGER, broker_cpu, carousel, count_status, on_ledger
from bench.report import save


def post_bodies(url: str, bodies: list[bytes], clients: int) -> float:
    """POST every (encoded) batch with ``clients`` concurrent connections; seconds."""

    async def main() -> None:
        todo = iter(bodies)
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:

            async def client() -> None:
                for body in todo:
                    r = await http.post(
                        f"{url}/events", content=body, headers={"content-type": "application/json"}
                    )
                    r.raise_for_status()

            await asyncio.gather(*(client() for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - started


def run(
    n: int = 20_000,
    batch: int = 100,
    clients: tuple[int, ...] = (1, 4, 8, 16),
    processes: tuple[int, ...] = (1, 2, 4),
) -> None:
    rows: list[dict[str, Any]] = []
    events = [
        {"host": f"h{i % 20}", "vm": f"vm{i % 1000}", "policy": "p", "action": "heal"}
        for i in range(n)
    ]
    bodies = [orjson.dumps({"events": events[i : i + batch]}) for i in range(0, n, batch)]
    warm = 10  # batches posted first, one client: they declare every key
    for p in processes:
        for c in clients:
            with carousel(PRODUCER_PROCESSES=p) as (stack, store):
                stack.producer()
                post_bodies(stack.producer_url, bodies[:warm], clients=1)
                cpu = broker_cpu()
                took = post_bodies(stack.producer_url, bodies[warm:], clients=c)
                cpu = broker_cpu() - cpu
                assert count_status(store, "queued") == n
            measured = n - warm * batch
            rows.append(
                {
                    "ledger": LEDGER,
                    "processes": p,
                    "clients": c,
                    "batch": batch,
                    "events": measured,
                    "seconds": took,
                    "events/s": measured / took,
                    # what the broker alone used of the machine's cores meanwhile
                    "broker cores": cpu / took,
                }
            )
            print(
                f"  processes={p} clients={c}: {measured / took:,.0f} events/s, "
                f"the broker {cpu / took:.2f} cores",
                flush=True,
            )
    best = max(rows, key=lambda r: r["events/s"])
    save(
        on_ledger("ingest"),
        f"Ingest: POST /events in batches of {batch}, 202 after broker confirms "
        f"({LEDGER} ledger); best {best['events/s']:,.0f} events/s with "
        f"{best['processes']} processes and {best['clients']} clients",
        rows,
        best=best,
    )


if __name__ == "__main__":
    run()
