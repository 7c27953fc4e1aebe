"""Dispatcher cost per decision (pick + completion) as the number of keys grows.

Pure, in-process: the Dispatcher over N keys of which 1,000 hold a head; the other
keys are idle. The cost must stay flat as idle keys grow.
"""

from __future__ import annotations

import time
from typing import Any

from bench.report import save
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from shared.models import Action, VmEventMessage


def run(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), decisions: int = 50_000) -> None:
    rows: list[dict[str, Any]] = []
    for keys in sizes:
        d: Dispatcher[int] = Dispatcher(
            Limits(max_parallel=64, per_vm=1, per_host=0), log_size=1000
        )
        hosts = max(1, keys // 100)
        for i in range(keys):
            d.add_key(f"h{i % hosts}", f"vm{i}", "p")
        ready = min(1000, keys)

        def event(n: int, ready: int = ready, hosts: int = hosts) -> VmEventMessage:
            i = n % ready
            return VmEventMessage(
                id=f"e{n}",
                host=f"h{i % hosts}",
                vm=f"vm{i}",
                policy="p",
                action=Action.HEAL,
                accepted_at=0.0,
            )

        pool = [event(n) for n in range(decisions + ready)]
        for n in range(ready):
            d.offer(pool[n], n)
        nxt = ready
        started = time.perf_counter()
        for _ in range(decisions):
            held = d.pick(0.0)
            assert held is not None
            d.complete(held.event.id)
            d.offer(pool[nxt], nxt)  # the key's next head arrives
            nxt += 1
        took = time.perf_counter() - started
        rows.append(
            {
                "keys": keys,
                "ready keys": ready,
                "decisions": decisions,
                "us per decision": took / decisions * 1e6,
                "decisions/s": decisions / took,
            }
        )
    save("dispatcher_cost", "Dispatcher cost: pick + completion + next head, per decision", rows)


if __name__ == "__main__":
    run()
