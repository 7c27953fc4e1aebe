"""The suite: start the stack and the load, inject each fault in turn, stop the load,
account, report. ``make faults`` is three runs (:func:`plan`): :data:`FULL` on a SQLite
ledger, then :data:`MACHINES` on PostgreSQL with the faults of processes on several
machines, then :data:`SHARDS`: dispatcher shards on PostgreSQL; :data:`FAST` is the CI
subset."""

from __future__ import annotations

import json
import random
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.faults import (
    accounting,
    clock,
    cloud,
    cloudapi,
    holds,
    kubernetes,
    ledger,
    limits,
    messages,
    process,
    report,
    retirement,
    shards,
)
from harness.faults.accounting import Accounting
from harness.faults.base import Ctx, Fault, FaultResult
from harness.faults.ledgerdb import POSTGRESQL, SQLITE
from harness.faults.load import LoadGenerator
from harness.faults.stack import FaultStack, Profile
from harness.processes import wait_until
from harness.recorder import COMPLETED

#: seconds every accepted event has to become final once the load stopped
FINAL_BOUND = 120.0
#: pause between two faults, so each one's aftermath is its own phase
SETTLE = 3.0

FAULTS: dict[str, Fault] = {
    f.name: f
    for f in [
        Fault("producer-kill", process.producer_kill, "kill -9 the producer mid-burst"),
        Fault("dispatcher-kill", process.dispatcher_kill, "kill -9 the dispatcher, 3 times"),
        Fault("worker-child-kill", process.worker_child_kill, "kill -9 a pool child mid-action"),
        Fault("worker-main-kill", process.worker_main_kill, "kill -9 a worker mid-action"),
        Fault(
            "second-dispatcher",
            process.second_dispatcher,
            "a second dispatcher beside",
            shards=False,
        ),
        Fault(
            "named-limits",
            limits.named_limits,
            "a group's upgrade under its budget, live migrations under their limit, "
            "dispatcher kill -9 x2",
        ),
        Fault(
            "retire-storm",
            retirement.retire_storm,
            "300 keys retiring at once, events arriving for them meanwhile, x3; "
            "dispatcher kill -9 in one storm",
        ),
        Fault("duplicate-posts", messages.duplicate_posts, "the same ids posted again"),
        Fault("duplicate-deliveries", messages.duplicate_deliveries, "copies on the queues"),
        Fault("garbage", messages.garbage, "unreadable messages on every queue"),
        Fault("queue-delete", messages.queue_delete, "an event queue deleted"),
        Fault("redrive-removed", messages.redrive_removed, "re-drive an event of a removed VM"),
        Fault("poison", messages.poison, "actions that always fail or kill their worker"),
        Fault("ledger-lock", ledger.ledger_lock, "BEGIN EXCLUSIVE on the ledger, 20 s", SQLITE),
        Fault(
            "ledger-lock-long",
            ledger.ledger_lock_long,
            "the same, 40 s (past busy timeout)",
            SQLITE,
        ),
        Fault(
            "consumer-timeout",
            holds.consumer_timeout,
            "heads held past a short consumer_timeout: paused, busy VM, host down",
        ),
        Fault("broker-restart", process.broker_restart, "stop RabbitMQ gracefully, start; x2"),
        Fault("broker-kill", process.broker_kill, "kill -9 RabbitMQ, start it again; x2"),
        Fault("elasticity-cutoff", process.elasticity_cutoff, "cut the elasticity observer"),
        Fault(
            "kubernetes-retire",
            kubernetes.kubernetes_retire,
            "retire Kubernetes workers, pods slow or failed",
        ),
        Fault("cloud-restart", cloud.cloud_restart, "simcloud restarted between host/VM faults"),
        Fault(
            "cloud-api",
            cloudapi.cloud_api,
            "simcloud's API failing half its calls, slow, while actions run",
        ),
        Fault(
            "clock-skew",
            clock.clock_skew,
            f"workers {clock.SKEW:.0f} s slow and fast, claim lease {clock.LEASE:.0f} s",
            POSTGRESQL,
        ),
        Fault(
            "ledger-cut",
            ledger.ledger_cut,
            "the active dispatcher cut off from PostgreSQL, a standby beside it",
            POSTGRESQL,
            shards=False,
        ),
        Fault(
            "shard-kill",
            shards.shard_kill,
            "kill -9 a dispatcher shard under load, its partitions taken over; restarted; x2",
            shards=True,
        ),
        Fault(
            "shard-join-leave",
            shards.shard_join_leave,
            "a shard joins under load, then another stops cleanly (SIGTERM)",
            shards=True,
        ),
    ]
}

FULL = Profile("full", workers=2, concurrency=3, max_parallel=4, rate=8.0)
FULL_FAULTS = [
    name for name, f in FAULTS.items() if f.ledger != POSTGRESQL and f.shards is not True
]
#: processes as on several machines, sharing a PostgreSQL ledger; claims short, swept
#: every second and their tasks sent again soon, so a claim judged wrongly expired is
#: taken over at once (as ``tests/integration/test_clock_skew.py`` sets them)
MACHINES = Profile(
    "machines",
    workers=2,
    concurrency=3,
    max_parallel=4,
    rate=6.0,
    ledger=POSTGRESQL,
    settings=(("CLAIM_LEASE_SECONDS", "3"), ("SWEEP_INTERVAL", "1"), ("RESEND_AFTER", "2")),
)
MACHINES_FAULTS = [
    "dispatcher-kill",
    "retire-storm",
    "worker-child-kill",
    "duplicate-deliveries",
    "clock-skew",
    "ledger-cut",
]
#: dispatcher shards (DISPATCHER_PARTITIONS=16), two of them, sharing a PostgreSQL ledger;
#: the load over 8 hosts, so that both shards serve some of it (4 would often be one's)
SHARDS = Profile(
    "shards",
    workers=2,
    concurrency=3,
    max_parallel=4,
    rate=6.0,
    hosts=8,
    vms=2,
    policies=2,
    ledger=POSTGRESQL,
    shards=2,
    partitions=16,
)
#: the shard faults, and those of the full run that mean the same with shards: a kill -9
#: of the first shard restarted at once (before its partitions expired), the named limits
#: (one budget in the ledger for every shard) under such kills, broker restarts (every
#: shard's session ends uncleanly), duplicate deliveries. Not the faults that start a
#: standby beside "the" dispatcher (second-dispatcher, ledger-cut).
SHARDS_FAULTS = [
    "shard-kill",
    "shard-join-leave",
    "dispatcher-kill",
    "named-limits",
    "broker-restart",
    "duplicate-deliveries",
]
FAST = Profile("fast", workers=1, concurrency=4, max_parallel=3, rate=6.0)
FAST_FAULTS = [
    Fault("dispatcher-kill", lambda c: process.dispatcher_kill(c, 2), "kill -9 the dispatcher x2"),
    Fault("worker-child-kill", lambda c: process.worker_child_kill(c, 2), "pool child x2"),
    FAULTS["garbage"],
    FAULTS["duplicate-posts"],
    FAULTS["duplicate-deliveries"],
]
#: the CI subset's shards: one kill -9 of a shard, on SQLite, apart from :data:`FAST`
FAST_SHARDS = Profile(
    "fast-shards",
    workers=1,
    concurrency=4,
    max_parallel=3,
    rate=6.0,
    hosts=8,
    vms=2,
    policies=2,
    shards=2,
    partitions=16,
)
FAST_SHARDS_FAULTS = [
    Fault(
        "shard-kill",
        lambda c: shards.shard_kill(c, 1),
        "kill -9 a dispatcher shard under load, its partitions taken over; restarted",
        shards=True,
    ),
]


def fits(fault: Fault, profile: Profile) -> bool:
    """Whether ``fault`` can run in ``profile``'s run: its ledger, and dispatcher shards
    or one dispatcher as it needs."""
    return fault.ledger in (None, profile.ledger) and fault.shards in (None, profile.shards > 0)


def plan(
    fast: bool = False, only: Sequence[str] = (), runs: Sequence[str] = ()
) -> list[tuple[Profile, list[Fault]]]:
    """The runs of ``python -m harness.faults``: the full suite, the machines one, then
    the shards one (``fast``: the CI subset alone, :data:`FAST` and :data:`FAST_SHARDS`);
    with ``only``, those faults, each in the run it needs — the shards run for a shard
    fault, else by its ledger (with ``fast``, the SQLite one is :data:`FAST`'s and the
    shards one :data:`FAST_SHARDS`'s). With ``runs``, only the runs so named: each
    with its own faults, or with ``only``, with those of them that :func:`fits` it (so
    ``runs=["shards"], only=["retire-storm"]`` runs that fault with shards)."""
    if runs:
        chosen_runs = [(p, fs) for p, fs in plan(fast) if p.name in runs]
        if only:
            picked = [FAULTS[n] for n in dict.fromkeys(only)]
            chosen_runs = [(p, [f for f in picked if fits(f, p)]) for p, _ in chosen_runs]
        return [(p, fs) for p, fs in chosen_runs if fs]
    if not only:
        if fast:
            return [(FAST, FAST_FAULTS), (FAST_SHARDS, FAST_SHARDS_FAULTS)]
        return [
            (FULL, [FAULTS[n] for n in FULL_FAULTS]),
            (MACHINES, [FAULTS[n] for n in MACHINES_FAULTS]),
            (SHARDS, [FAULTS[n] for n in SHARDS_FAULTS]),
        ]
    chosen = [FAULTS[n] for n in dict.fromkeys(only)]
    single = [f for f in chosen if f.shards is not True]
    by_run = [
        (FAST if fast else FULL, [f for f in single if f.ledger != POSTGRESQL]),
        (MACHINES, [f for f in single if f.ledger == POSTGRESQL]),
        (FAST_SHARDS if fast else SHARDS, [f for f in chosen if f.shards is True]),
    ]
    return [(profile, faults) for profile, faults in by_run if faults]


#: every run's name, for ``--run``
RUN_NAMES = [profile.name for profile, _ in plan()] + [profile.name for profile, _ in plan(True)]


@dataclass
class SuiteResult:
    profile: Profile
    results: list[FaultResult]
    accounting: Accounting
    text: str
    base: Path

    @property
    def ok(self) -> bool:
        return self.accounting.ok and not any(r.error for r in self.results)

    @property
    def final_line(self) -> str:
        return report.final_line(self.results, self.accounting)

    def phase(self, name: str) -> dict[str, int]:
        kinds = (accounting.LOST, accounting.DUPLICATE, accounting.VIOLATION, accounting.STUCK)
        return {k: self.accounting.count(k, name) for k in kinds}

    def rows(self) -> list[dict[str, Any]]:
        """The run's table for the documents: per fault what it does, how often it was
        injected, its slowest recovery and the anomalies charged to it."""
        out = []
        for r in self.results:
            what = FAULTS[r.name].what if r.name in FAULTS else r.name
            out.append(
                {
                    "what": f"`{r.name}`: {what}",
                    "injected": "skipped" if r.skipped else r.injected,
                    "recovery": report.slowest_recovery(r),
                    "counts": list(self.phase(r.name).values()),
                }
            )
        for phase in ("baseline", "drain"):
            counts = list(self.phase(phase).values())
            out.append({"what": phase, "injected": "-", "recovery": "-", "counts": counts})
        return out


def run(
    profile: Profile,
    faults: list[Fault],
    base: Path,
    out: Callable[[str], None] = print,
    seed: int | None = None,
) -> SuiteResult:
    seed = random.randrange(1 << 30) if seed is None else seed
    t0 = time.time()

    def log(msg: str) -> None:
        out(f"[{time.time() - t0:6.1f}s] {msg}")

    log(f"fault suite '{profile.name}' (seed {seed}) in {base}")
    stack = FaultStack(base, profile)
    try:
        stack.start()
        shards_said = (
            f"{profile.shards} dispatcher shards over {profile.partitions} partitions, "
            if profile.shards
            else ""
        )
        log(
            f"stack up: broker {stack.broker.url}, {profile.ledger} ledger, {shards_said}"
            f"{profile.workers} worker(s)"
        )
        load = LoadGenerator(stack.stack.producer_url, profile.rate, profile.keys(), seed)
        ctx = Ctx(stack, load, random.Random(seed), log)
        phases = [("baseline", t0)]
        load.start()
        wait_until(
            lambda: sum(c.outcome == COMPLETED for c in stack.receiver.calls()) >= 10,
            90,
            what="warm-up: ten actions completed",
        )
        results = [_inject(ctx, fault, phases) for fault in faults]
        phases.append(("drain", time.time()))
        log("faults done; stopping the load")
        load.stop()
        acc = _account(stack, load, phases, log, results)
        text = _report(results, acc, stack, load, t0)
        out(text)
        (base / "report.txt").write_text(text + "\n")
        (base / "anomalies.json").write_text(
            json.dumps([asdict(a) for a in acc.anomalies], indent=1)
        )
        return SuiteResult(profile, results, acc, text, base)
    finally:
        stack.close()


def _inject(ctx: Ctx, fault: Fault, phases: list[tuple[str, float]]) -> FaultResult:
    phases.append((fault.name, time.time()))
    ctx.log(f"fault {fault.name}: {fault.what}")
    try:
        result = fault.run(ctx)
    except Exception as exc:
        ctx.log(traceback.format_exc())
        result = FaultResult(fault.name, note=f"error: {exc!r}"[:200], error=repr(exc))
    result.name, result.started = fault.name, phases[-1][1]
    ctx.log(f"  -> injected {result.injected}, recoveries {result.recoveries} {result.note}")
    time.sleep(SETTLE)  # pacing between faults
    return result


def _account(
    stack: FaultStack,
    load: LoadGenerator,
    phases: list[tuple[str, float]],
    log: Callable[[str], None],
    results: list[FaultResult],
) -> Accounting:
    ids = list(load.accepted)
    log(f"waiting up to {FINAL_BOUND:.0f} s for {len(ids)} accepted events to be final")
    statuses = accounting.wait_final(stack, ids, FINAL_BOUND)
    live = accounting.wait_drained(stack, 60)
    names = accounting.queues(stack)
    stack.stop_services()
    stopped = {n: d for n, d in stack.depths(names).items() if d}
    dead = stack.depths([stack.topology.dead_letter_queue.name])
    anomalies = accounting.classify(
        load.accepted,
        statuses,
        stack.receiver.calls(),
        set(load.sent),
        stack.profile.per_vm,
        stack.profile.max_parallel,
        stack.kill_times,
        stack.action_limits,
        stack.group_budgets,
    )
    out_of_order, ordered_pairs = accounting.order(
        load.accepted, stack.receiver.calls(), load.first_sent
    )
    anomalies += out_of_order
    anomalies += accounting.client_side(load, stack.receiver.calls())
    anomalies += [a for r in results for a in r.anomalies]  # what faults checked themselves
    accounting.charge(anomalies, phases)
    return Accounting(
        events=len(ids) + sum(r.events for r in results),
        anomalies=anomalies,
        statuses=statuses,
        queues_live=live,
        queues_stopped=stopped,
        dead_letters=dead[stack.topology.dead_letter_queue.name],
        ordered_pairs=ordered_pairs,
        out_of_order=len(out_of_order),
    )


def _report(
    results: list[FaultResult],
    acc: Accounting,
    stack: FaultStack,
    load: LoadGenerator,
    t0: float,
) -> str:
    calls = stack.receiver.calls()
    outcomes: dict[str, int] = {}
    for c in calls:
        outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
    lines = [
        "",
        report.table(results, acc, t0),
        "",
        report.evidence(acc, calls, stack.logs, t0),
        "",
        report.queues(acc),
        f"each key's order: {acc.ordered_pairs} pairs of events judged (the first's 202 "
        f"before the second was sent), {acc.out_of_order} out of order (violations)",
        *report.errors(results),
        f"load: {load.posts} posts, errors retried {dict(load.errors)}, "
        f"refused {len(load.refused)}, abandoned ids {len(load.abandoned)}",
        f"receiver: {len(calls)} calls {outcomes}",
        f"phantom calls (ids never posted): {acc.count(accounting.PHANTOM)}; "
        f"valid posts refused: {acc.count(accounting.REFUSED)}; "
        f"ids never answered 202: {acc.count(accounting.UNANSWERED)}; "
        f"misreported outcomes: {acc.count(accounting.MISREPORTED)}; "
        f"actions run again after their worker was killed between the cloud's answer and "
        f"the ledger's record (documented): {acc.count(accounting.REPEATED)}",
        f"logs: {stack.logs}",
        report.final_line(results, acc),
    ]
    return "\n".join(lines)
