"""Elasticity reaction: from a backlog appearing to the pool at its target, and from the
backlog drained to the pool back at its minimum (min 1, max 4, 1 s actions)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from bench.common import carousel, count_status, post_all, wait_for
from bench.report import save


def run(events: int = 200, interval: float = 1.0, down_window: float = 5.0) -> None:
    profiles = {"default": {"min_workers": 1, "max_workers": 4, "scale_down_window": down_window}}
    env = {
        "ELASTICITY_INTERVAL": interval,
        "ELASTICITY_PROFILES": json.dumps(profiles),
        "ELASTICITY_BUDGET": 4,
        "MAX_PARALLEL": 8,
        "SIMULATED_DURATION": 1.0,
    }
    with carousel(**env) as (stack, store):
        stack.producer()
        stack.dispatcher()
        stack.elasticity()

        def up() -> int:
            p = httpx.get(f"{stack.elasticity_url}/status").json()["profiles"]["default"]
            return int(p["counts"]["idle"] + p["counts"]["busy"])

        wait_for(lambda: up() == 1, 60, "minimum up")
        batch = [
            {"host": f"h{i % 5}", "vm": f"vm{i}", "policy": "p", "action": "heal"}
            for i in range(events)
        ]
        t0 = time.perf_counter()
        post_all(stack.producer_url, [batch])
        wait_for(lambda: up() == 4, 120, "pool at 4")
        grown = time.perf_counter() - t0
        wait_for(lambda: count_status(store, "succeeded") == events, 600, "drained")
        drained = time.perf_counter()
        wait_for(lambda: up() == 1, 120, "back at the minimum")
        shrunk = time.perf_counter() - drained
    rows: list[dict[str, Any]] = [
        {
            "events": events,
            "action s": 1.0,
            "interval s": interval,
            "scale-down window s": down_window,
            "backlog -> 4 workers up s": grown,
            "drained -> back at 1 s": shrunk,
            "drain time s": drained - t0,
        }
    ]
    save("elasticity", "Elasticity reaction (local provider, real worker processes)", rows)


if __name__ == "__main__":
    run()
