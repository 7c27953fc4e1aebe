"""`python -m bench [NAME ...]`: run the named measurements (default: all), in order."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import (
    broker_floor,
    budgets,
    dispatcher_cost,
    elasticity,
    fairness,
    goals,
    ingest,
    keys,
    live_page,
    monitoring,
    profile,
    queue_memory,
    scale,
    shard_fairness,
    shards,
    throughput,
    urgency,
)

MEASUREMENTS: dict[str, Callable[[], None]] = {
    "dispatcher_cost": dispatcher_cost.run,
    "shard_fairness": shard_fairness.run,
    "shards": shards.run,
    "ingest": ingest.run,
    "throughput": throughput.run,
    "fairness": fairness.run,
    "urgency": urgency.run,
    "budgets": budgets.run,
    "scale": scale.run,
    "keys": keys.run,
    "elasticity": elasticity.run,
    "monitoring": monitoring.run,
    "live_page": live_page.run,
    "profile": profile.run,
    "queue_memory": queue_memory.run,
    "broker_floor": broker_floor.run,
    # last: the goals table, from the results above
    "goals": goals.run,
}


def main(names: list[str]) -> None:
    unknown = set(names) - set(MEASUREMENTS)
    if unknown:
        sys.exit(f"unknown measurement(s) {sorted(unknown)}; choose from {list(MEASUREMENTS)}")
    for name in names or list(MEASUREMENTS):
        print(f"\n### {name}", flush=True)
        MEASUREMENTS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
