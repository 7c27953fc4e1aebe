"""Dispatcher cost per decision (pick + completion + next head) as the number of keys grows.

Pure, in-process: the Dispatcher over N keys of which 1,000 hold a head; the other
keys are idle. The cost must stay flat as idle keys grow. Three configurations, side
by side:

- ``plain``: one class, every weight 1, no named limit;
- ``classes and weights``: the keys spread over the three classes (each key's events of
  one class, minimum shares on), two policies per VM, weights at host, VM and policy
  level, an action limit and group budgets set (never full: one action is in flight at a
  time, so every head is checked against them and none is held);
- the same with the ready keys on the same 10 hosts at every size: in the two above, as
  the keys grow, the ready keys spread over more hosts (fewer VMs each), so the shape of
  the work changes with the size as well as the idle keys' number; here only the idle
  keys grow.

Each size runs its decisions three times over; the best run counts (the machine is
shared: the slowest runs measure the other work on it as much as the dispatcher).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from bench.report import save
from scheduler.dispatcher.dispatcher import Classes, Dispatcher, Limits
from scheduler.dispatcher.limits import NamedLimits
from scheduler.dispatcher.roundrobin import Weights
from shared.models import Action, VmEventMessage
from shared.priority import ORDER, Priority

PLAIN = "plain"
WEIGHTED = "classes and weights"
FIXED = "classes and weights, ready keys on 10 hosts"
READY = 1000
REPEATS = 3
GROUPS = 10

KeyOf = Callable[[int], tuple[str, str, str]]
#: a configuration: the dispatcher over N keys, key i, and what key i's events carry
Setup = Callable[[int], tuple[Dispatcher[int], KeyOf, Callable[[int], dict[str, Any]]]]


def _plain(keys: int) -> tuple[Dispatcher[int], KeyOf, Callable[[int], dict[str, Any]]]:
    hosts = max(1, keys // 100)
    d: Dispatcher[int] = Dispatcher(Limits(max_parallel=64, per_vm=1, per_host=0), log_size=1000)

    def key(i: int) -> tuple[str, str, str]:
        return f"h{i % hosts}", f"vm{i}", "p"

    return d, key, lambda i: {}


def _weighted(
    keys: int, fixed: bool = False
) -> tuple[Dispatcher[int], KeyOf, Callable[[int], dict[str, Any]]]:
    """Two policies per VM (``p`` weight 2, ``q`` 1), 50 VMs per host; every fourth host
    weight 3, the next weight 2; every fifth VM weight 2; key ``i``'s events are of class
    ``ORDER[i % 3]``; each VM in one of :data:`GROUPS` groups, each with budget 2; heal
    limited to 32.

    The VMs go round the hosts as the plain configuration's do, so the ready keys spread
    over more hosts as the keys grow; ``fixed``: each host's 50 VMs are consecutive, so the
    ready keys sit on the same 10 hosts at every size and only idle hosts are added."""
    vms = max(1, keys // 2)
    hosts = max(1, vms // 50)

    def host_of(v: int) -> str:
        return f"h{v // 50 if fixed else v % hosts}"

    weights = Weights(
        hosts={f"h{h}": 3 if h % 4 == 0 else 2 for h in range(hosts) if h % 4 < 2},
        vms={(host_of(v), f"vm{v}"): 2 for v in range(0, vms, 5)},
        policies={"p": 2, "q": 1},
    )
    d: Dispatcher[int] = Dispatcher(
        Limits(max_parallel=64, per_vm=1, per_host=0),
        log_size=1000,
        classes=Classes(min_shares={Priority.NORMAL: 0.2, Priority.BACKGROUND: 0.1}),
        weights=weights,
        named=NamedLimits(
            actions={Action.HEAL.value: 32}, groups={f"g{g}": 2 for g in range(GROUPS)}
        ),
    )

    def key(i: int) -> tuple[str, str, str]:
        v = i // 2
        return host_of(v), f"vm{v}", "pq"[i % 2]

    def extra(i: int) -> dict[str, Any]:
        return {"priority": ORDER[i % len(ORDER)], "group": f"g{(i // 2) % GROUPS}"}

    return d, key, extra


CONFIGURATIONS: dict[str, Setup] = {
    PLAIN: _plain,
    WEIGHTED: _weighted,
    FIXED: functools.partial(_weighted, fixed=True),
}


def measure(configuration: str, keys: int, decisions: int) -> dict[str, Any]:
    d, key, extra = CONFIGURATIONS[configuration](keys)
    for i in range(keys):
        d.add_key(*key(i))
    ready = min(READY, keys)

    def event(n: int) -> VmEventMessage:
        i = n % ready
        host, vm, policy = key(i)
        return VmEventMessage(
            id=f"e{n}",
            host=host,
            vm=vm,
            policy=policy,
            action=Action.HEAL,
            accepted_at=0.0,
            **extra(i),
        )

    pool = [event(n) for n in range(REPEATS * decisions + ready)]
    for n in range(ready):
        d.offer(pool[n], n)
    nxt = ready
    runs: list[float] = []
    served: dict[str, int] = {}
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(decisions):
            held = d.pick(0.0)
            assert held is not None
            d.complete(held.event.id)
            d.offer(pool[nxt], nxt)  # the key's next head arrives
            nxt += 1
        runs.append(time.perf_counter() - started)
    for cls in ORDER:
        served[cls.value] = d.rr.served[cls]
    best = min(runs)
    row: dict[str, Any] = {
        "configuration": configuration,
        "keys": keys,
        "ready keys": ready,
        "decisions": decisions,
        "us per decision": best / decisions * 1e6,
        "decisions/s": decisions / best,
        "slowest run us": max(runs) / decisions * 1e6,
    }
    if configuration != PLAIN:
        total = sum(served.values())
        shares = " / ".join(f"{served[c.value] / total:.2f}" for c in ORDER)
        row["class shares urgent / normal / background"] = shares
    return row


def run(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), decisions: int = 50_000) -> None:
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    for configuration in CONFIGURATIONS:
        mine = [measure(configuration, keys, decisions) for keys in sizes]
        ratio = mine[-1]["us per decision"] / mine[0]["us per decision"]
        ratios[configuration] = round(ratio, 3)
        mine[-1][f"÷ {sizes[0]:,} keys"] = round(ratio, 3)
        rows += mine
    save(
        "dispatcher_cost",
        "Dispatcher cost: pick + completion + next head, per decision; "
        f"{sizes[-1]:,} ÷ {sizes[0]:,} keys: "
        + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()),
        rows,
        ratios=ratios,
        sizes=list(sizes),
    )


if __name__ == "__main__":
    run()
