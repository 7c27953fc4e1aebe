"""Dispatcher shards on a real stack (issue 24, docs/design.md §7 "Shards"): one dispatcher
against 1, 2 and 4 shards, and a shard killed under load.

The stack: a 3-node RabbitMQ cluster on loopback (:class:`harness.rabbit_cluster.
RabbitCluster`, private nodes, quorum queues; ``SHARDS_BROKER=local`` runs on the machine's
broker instead, classic queues), a ledger of its own on the local PostgreSQL (SQLite
serialises writers: shards would queue on its lock), one producer, one worker (a threads
pool, :data:`WORKER_CONCURRENCY`), the webhook driver calling the fault suite's recording
receiver (:mod:`harness.recorder`: every call, who was running beside it), and the
dispatchers, each a process of its own on its own port, each connecting to a node of its
own first (the producer to node 0, the worker to node 1, dispatcher ``i`` to node ``i % 3``).
:data:`HOSTS` hosts of :data:`VMS` VMs, one policy: one key per VM; ``MAX_PARALLEL``
:data:`LIMIT` (one slot per host), one action per VM, ``DISPATCHER_PARTITIONS``
:data:`PARTITIONS`, ``DISPATCHER_LEASE_SECONDS`` :data:`LEASE_S`.

Each configuration runs two phases on one stack, each a fixed backlog posted while the
dispatchers are paused (the pause is the cluster's) and dispatched from a resume:

- ``flood``: :data:`FLOOD_PER_KEY` events per key, instant actions. Nothing but the
  machine bounds the rate (the slots are not the limit): the events dispatched per second
  by all dispatchers together, and each dispatcher's CPU (``/proc/<pid>/stat``, user +
  system) per event it dispatched. Every process of the stack shares this machine's cores
  (the broker's nodes, PostgreSQL, the worker, the receiver, the dispatchers), so the
  absolute rate is the machine's; the *decision capacity* is what the dispatchers' own CPU
  allows: the sum over dispatchers of the events each would dispatch with a core of its
  own at the CPU per event measured — its CPU beyond its idle cost (measured over a lease
  while paused) per event, into the part of a second its idle cost leaves.
- ``slots``: :data:`SLOTS_PER_KEY` events per key, each action :data:`SLOTS_HOLD_S` long:
  the slots are the limit, split across the shards by their demand (hosts with work).
  Each shard's usable slots are sampled every half second: which splits held in the
  window, and for how much of it.

Fairness, in each phase: the *saturated window* runs from the moment every dispatcher has
dispatched (the latest of their first dispatches: a resume reaches the other shards at their
next round) to the moment the first host's backlog ran out (the earliest of the hosts' last
dispatches); every host has work throughout. A host's *share* is its dispatches in the window
÷ all dispatches in the window (the ledger's ``dispatched_at``). Every host has the same
backlog and weight, so its fair share is 1/H. The *fairness error* of a configuration is
the worst over the hosts of ``|share - 1/H| ÷ (1/H)`` (the mean beside it); the single
dispatcher's own error is the yardstick (a host gets a whole number of dispatches in the
window: about one in the window's per-host count is noise). Beside it, the worst
``|share ÷ single's share - 1|``: the same host against the single dispatcher's run.

Where a shard's CPU goes (``shards_cpu``): over every shard of the 1, 2 and 4 shard runs, a
least-squares fit of its CPU beyond its idle cost as ``a`` per event of the whole cluster
(every shard decodes every worker's task event: the completions fan out) plus ``b`` per
event it dispatched itself. The events of the cluster are the same in every run, so ``a``
also takes any other cost every shard pays alike over the phase. From it, the rate N shards
would reach with a core each, hosts spread evenly: ``(1 - idle) / (a + b / N)``, never
beyond ``(1 - idle) / a``. The CPU per event depends on the rate it was measured at (a
dispatcher serves what has arrived in one ledger transaction and one round of confirms:
slower, smaller batches), so these are the costs at this machine's rates, not at a core's.

The kill: two shards, :data:`KILL_PER_KEY` events per key of :data:`KILL_HOLD_S` s; once a
quarter of the calls have started, one shard is killed (SIGKILL, its process group). The
*takeover*: from the kill until the survivor's ``/stats`` shows it serving every partition
(polled every 50 ms); *dispatching resumed*: until the first dispatch of an event of the
dead shard's hosts after the kill; the survivor's own hosts' longest pause meanwhile (its
session restarts to take the partitions). Then every event must have succeeded once: lost
(not succeeded), duplicates (an event whose action completed more than once at the
receiver), and violations (a call that found more than ``MAX_PARALLEL`` calls running, or
two of one VM), all from the receiver, not the services' own counts.
"""

from __future__ import annotations

import itertools
import os
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.common import AMQP_URL, post_all, wait_for
from bench.report import save
from harness import private_broker
from harness.broker import delete_topology
from harness.ledgers import fresh_pg_database
from harness.processes import Service, Stack, free_port
from harness.rabbit_cluster import RabbitCluster
from harness.recorder import COMPLETED, Receiver
from shared.partition_leases import partition_of
from shared.store import Store, events
from shared.topology import Topology

#: ``cluster`` (3 private nodes, quorum queues) or ``local`` (the machine's broker)
BROKER = os.environ.get("SHARDS_BROKER", "cluster")
HOSTS = 32
VMS = 4
LIMIT = 32
PARTITIONS = 16
LEASE_S = 5.0
#: 0: a single dispatcher (DISPATCHER_PARTITIONS=0); more: that many shards
CONFIGURATIONS = (0, 1, 2, 4)
FLOOD_PER_KEY = 16
SLOTS_PER_KEY = 10
SLOTS_HOLD_S = 1.0
KILL_PER_KEY = 16
KILL_HOLD_S = 0.2
KILLS = 3
WORKER_CONCURRENCY = LIMIT + 8
FLOOD, SLOTS = "flood", "slots"
SINGLE = "single dispatcher"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (every thread of it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Broker:
    urls: list[str]
    queue_type: str
    what: str

    def url_for(self, node: int) -> str:
        """Every node's URL, starting with ``node`` (modulo the nodes)."""
        first = node % len(self.urls)
        return ";".join(self.urls[first:] + self.urls[:first])


@contextmanager
def broker(base: Path) -> Iterator[Broker]:
    if BROKER == "local":
        yield Broker([AMQP_URL], "classic", "the machine's RabbitMQ, one node, classic queues")
        return
    if not private_broker.available():
        raise SystemExit("no rabbitmq-server here: run with SHARDS_BROKER=local")
    cluster = RabbitCluster(base / "cluster", size=3)
    try:
        cluster.start()
        urls = [node.url for node in cluster.nodes]
        yield Broker(urls, "quorum", "3-node RabbitMQ cluster on loopback, quorum queues")
    finally:
        cluster.stop()


@dataclass
class Dispatcher:
    label: str
    service: Service
    url: str

    def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/stats", timeout=10).json()
        return body

    def serving(self) -> set[int]:
        shard = self.stats()["shard"]
        return set(shard["serving"]) if shard else set(range(PARTITIONS))

    @property
    def pid(self) -> int:
        assert self.service.proc is not None
        return self.service.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


@dataclass
class Run:
    """One stack: its dispatchers, its ledger and the receiver."""

    shards: int
    stack: Stack
    store: Store
    receiver: Receiver
    dispatchers: list[Dispatcher] = field(default_factory=list)

    @property
    def first(self) -> Dispatcher:
        return self.dispatchers[0]

    def owner(self) -> dict[str, str]:
        """Each host's dispatcher, by the partitions each serves now."""
        if self.shards == 0:
            return {f"h{h}": self.first.label for h in range(HOSTS)}
        serving = {d.label: d.serving() for d in self.dispatchers}
        return {
            f"h{h}": next(
                s for s, mine in serving.items() if partition_of(f"h{h}", PARTITIONS) in mine
            )
            for h in range(HOSTS)
        }

    def split(self) -> bool:
        """Every partition served by exactly one shard (always, for a single dispatcher)."""
        if self.shards == 0:
            return True
        served = [d.serving() for d in self.dispatchers]
        every = set().union(*served)
        return all(served) and sum(map(len, served)) == PARTITIONS == len(every)

    def paused(self, value: bool) -> bool:
        return all(d.stats()["paused"] is value for d in self.dispatchers)

    def agreed(self, owner: dict[str, str]) -> bool:
        """The demand split in force: the shards' usable slots sum to ``LIMIT`` and each is
        within one slot of its hosts' part (every host has demand: ``LIMIT`` times its hosts
        over ``HOSTS``; a share table is not replaced for a difference of one slot,
        :func:`scheduler.dispatcher.partitions.outdated`)."""
        if self.shards == 0:
            return True
        hosts = Counter(owner.values())
        got = {d.label: (d.stats()["shard"] or {}).get("usable") for d in self.dispatchers}
        usable = {s: int(u) for s, u in got.items() if u is not None}
        if len(usable) != len(got) or sum(usable.values()) != LIMIT:
            return False
        return all(abs(u - LIMIT * hosts[s] / HOSTS) <= 1 for s, u in usable.items())

    def count(self, prefix: str, *statuses: str) -> int:
        with self.store.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(events)
                    .where(events.c.id.startswith(prefix), events.c.status.in_(statuses))
                ).scalar_one()
            )

    def dispatches(self, prefix: str) -> list[tuple[str, str, float | None, str]]:
        """(id, host, dispatched_at, status) of the phase's events."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    events.c.id, events.c.host, events.c.dispatched_at, events.c.status
                ).where(events.c.id.startswith(prefix))
            ).all()
        return [(r.id, r.host, r.dispatched_at, r.status) for r in rows]


@contextmanager
def stack(broker: Broker, shards: int, log: str = "WARNING") -> Iterator[Run]:
    workdir = Path(tempfile.mkdtemp(prefix="carousel-bench-shards-"))
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    receiver = Receiver()
    with fresh_pg_database(prefix="carousel_bench") as db:
        env = {
            "AMQP_URL": broker.url_for(0),
            "QUEUE_TYPE": broker.queue_type,
            "CAROUSEL_PREFIX": prefix,
            "CAROUSEL_DB_URL": db,
            "PRODUCER_PORT": str(free_port()),
            "DISPATCHER_PORT": str(free_port()),
            "ELASTICITY_PORT": str(free_port()),
            "DRIVER": "webhook",
            "WEBHOOK_URL": receiver.url,
            "MAX_PARALLEL": str(LIMIT),
            "PER_VM_LIMIT": "1",
            "WORKER_POOL": "threads",
            "WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "DISPATCHER_PARTITIONS": str(PARTITIONS if shards else 0),
            "DISPATCHER_LEASE_SECONDS": str(LEASE_S),
            "LOG_LEVEL": log,
        }
        s = Stack(env, workdir)
        store = Store.connect(db)
        run = Run(shards, s, store, receiver)
        try:
            s.producer()
            s.worker(AMQP_URL=broker.url_for(1))
            for i in range(max(1, shards)):
                port = s.env["DISPATCHER_PORT"] if i == 0 else str(free_port())
                url = f"http://127.0.0.1:{port}"
                svc = Service(
                    "carousel-dispatcher",
                    {**s.env, "DISPATCHER_PORT": port, "AMQP_URL": broker.url_for(i)},
                    workdir,
                    f"{url}/readyz",
                ).start(wait=False)
                s.services.append(svc)
                run.dispatchers.append(Dispatcher(SINGLE if not shards else f"s{i}", svc, url))
            for d in run.dispatchers:
                wait_for(d.service._ready, 120, f"{d.label} ready")
            wait_for(run.split, 120, "the shards split the partitions")
            yield run
        finally:
            s.stop()
            try:
                delete_topology(
                    broker.url_for(0), Topology(prefix, broker.queue_type), store.all_keys()
                )
            finally:
                store.engine.dispose()
                receiver.close()


def backlog(tag: str, per_key: int, hold: float) -> list[list[dict[str, Any]]]:
    """``per_key`` events on every key, in rounds (each round one event per key), in
    batches of 256."""
    evs = [
        {
            "id": f"{tag}-h{h}-vm{v}-{n}",
            "host": f"h{h}",
            "vm": f"vm{v}",
            "policy": "p",
            "action": "heal",
            "payload": {"hold": hold},
        }
        for n in range(per_key)
        for h in range(HOSTS)
        for v in range(VMS)
    ]
    return [evs[i : i + 256] for i in range(0, len(evs), 256)]


@dataclass
class Loaded:
    """A backlog posted and queued behind a pause, about to be resumed."""

    tag: str
    n: int
    owner: dict[str, str]
    agreed: bool
    #: each dispatcher's usable slots at the resume
    slots: str


def load(run: Run, tag: str, per_key: int, hold: float) -> Loaded:
    httpx.post(f"{run.first.url}/pause", timeout=10).raise_for_status()
    wait_for(lambda: run.paused(True), 60, "every dispatcher paused")
    batches = backlog(tag, per_key, hold)
    n = sum(map(len, batches))
    post_all(run.stack.producer_url, batches)
    wait_for(lambda: run.count(f"{tag}-", "queued") == n, 300, "the backlog queued")
    owner = run.owner()
    try:  # the demand split agreed before the resume (a few rounds)
        wait_for(lambda: run.agreed(owner), 10 * LEASE_S, "the shares agreed")
        agreed = True
    except AssertionError:
        agreed = False
    slots = [
        LIMIT if run.shards == 0 else (d.stats()["shard"] or {}).get("usable")
        for d in run.dispatchers
    ]
    return Loaded(tag, n, owner, agreed, " / ".join(str(u) for u in slots))


def resume(run: Run) -> float:
    at = time.time()
    httpx.post(f"{run.first.url}/resume", timeout=10).raise_for_status()
    return at


def window(
    rows: list[tuple[str, str, float | None, str]], owner: dict[str, str]
) -> tuple[float, float, Counter[str]]:
    """The saturated window (every dispatcher dispatching, every host with work) and each
    host's dispatches in it."""
    times = [(host, at) for _, host, at, _ in rows if at is not None]
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for host, at in times:
        first[owner[host]] = min(at, first.get(owner[host], at))
        last[host] = max(at, last.get(host, at))
    start, end = max(first.values()), min(last.values())
    counts: Counter[str] = Counter({f"h{h}": 0 for h in range(HOSTS)})
    counts.update(host for host, at in times if start <= at < end)
    return start, end, counts


def shares(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {h: c / total for h, c in counts.items()} if total else {}


def error(share: dict[str, float], reference: dict[str, float]) -> tuple[float, float]:
    """Worst and mean ``|share ÷ reference - 1|`` over the hosts, %."""
    errs = [abs(share[h] / reference[h] - 1) for h in reference if reference[h]]
    return 100 * max(errs), 100 * sum(errs) / len(errs)


class Splits:
    """Each dispatcher's usable slots, sampled at most every half second."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.samples: list[tuple[float, tuple[int, ...]]] = []

    def sample(self) -> bool:
        """Take a sample if the last is half a second old; always True (a condition's
        first term)."""
        if self.samples and time.time() - self.samples[-1][0] < 0.5:
            return True
        split = tuple(
            LIMIT if self.run.shards == 0 else int((d.stats()["shard"] or {}).get("usable") or 0)
            for d in self.run.dispatchers
        )
        self.samples.append((time.time(), split))
        return True

    def within(self, start: float, end: float) -> str:
        """The splits sampled between ``start`` and ``end``, most frequent first, each with
        its share of the samples."""
        seen = Counter(split for at, split in self.samples if start <= at <= end)
        total = sum(seen.values())
        return ", ".join(
            f"{' / '.join(map(str, split))} ({100 * n / total:.0f} %)"
            for split, n in seen.most_common()
        )


def capacity(cpu: float, idle: float, seconds: float, dispatched: int) -> float:
    """The events per second a dispatcher would dispatch with a core of its own: its CPU
    per event beyond its idle cost (``idle`` CPU seconds per second, over ``seconds``)
    into the part of a second its idle cost leaves."""
    net = cpu - idle * seconds
    if dispatched == 0 or net <= 0:
        return 0.0
    return (1 - idle) * dispatched / net


@dataclass
class Phase:
    row: dict[str, Any]
    share: dict[str, float]
    #: each dispatcher's (events dispatched by all, by itself, CPU s beyond its idle cost)
    cpu: list[tuple[int, int, float]]
    #: the dispatchers' mean idle CPU, s per s
    idle: float


def phase(run: Run, tag: str, per_key: int, hold: float) -> Phase:
    loaded = load(run, tag, per_key, hold)
    # each dispatcher's CPU with nothing to dispatch (paused, its heads held): its rounds,
    # its timers; over a lease, so that every shard's rounds are in it
    idle0, idle_at = {d.label: d.cpu() for d in run.dispatchers}, time.monotonic()
    time.sleep(LEASE_S)
    idle = {
        d.label: (d.cpu() - idle0[d.label]) / (time.monotonic() - idle_at) for d in run.dispatchers
    }
    cpu0 = {d.label: d.cpu() for d in run.dispatchers}
    total0 = {d.label: d.stats()["dispatched_total"] for d in run.dispatchers}
    resumed = resume(run)
    splits = Splits(run)
    wait_for(
        lambda: splits.sample() and run.count(f"{tag}-", "succeeded", "failed") == loaded.n,
        600,
        f"the {tag} backlog finished",
    )
    took = time.time() - resumed
    cpu = {d.label: d.cpu() - cpu0[d.label] for d in run.dispatchers}
    done = {d.label: d.stats()["dispatched_total"] - total0[d.label] for d in run.dispatchers}
    rows = run.dispatches(f"{tag}-")
    start, end, counts = window(rows, loaded.owner)
    share = shares(counts)
    worst, mean = error(share, dict.fromkeys(share, 1 / HOSTS))
    hosts = Counter(loaded.owner.values())
    labels = [d.label for d in run.dispatchers]
    calls = [c for c in run.receiver.calls() if c.event_id.startswith(f"{tag}-")]
    completed = Counter(c.event_id for c in calls if c.outcome == COMPLETED)
    at = [a for _, _, a, _ in rows if a is not None]
    row: dict[str, Any] = {
        "phase": tag,
        "dispatchers": SINGLE if run.shards == 0 else f"{run.shards} shard(s)",
        "events": loaded.n,
        "action s": hold,
        "hosts per dispatcher": " / ".join(str(hosts[label]) for label in labels),
        "shares agreed before the resume": loaded.agreed,
        "slots per dispatcher": loaded.slots,
        "slots per dispatcher in the window (share of samples)": splits.within(start, end),
        "resume to all done s": took,
        "dispatched/s, whole run": len(at) / (max(at) - min(at)),
        "window s": end - start,
        "dispatched/s in the window": sum(counts.values()) / (end - start),
        "dispatches per host in the window": sum(counts.values()) / HOSTS,
        "dispatched, each dispatcher": " / ".join(str(done[label]) for label in labels),
        "idle CPU ms/s, each dispatcher": " / ".join(
            f"{1000 * idle[label]:.0f}" for label in labels
        ),
        "CPU ms/event, each dispatcher": " / ".join(
            f"{1000 * cpu[label] / max(1, done[label]):.2f}" for label in labels
        ),
        "CPU ms/event, all dispatchers": 1000 * sum(cpu.values()) / loaded.n,
        "decision capacity /s": sum(
            capacity(cpu[label], idle[label], took, done[label]) for label in labels
        ),
        "worst ÷ 1/H %": worst,
        "mean ÷ 1/H %": mean,
        "lost": loaded.n - run.count(f"{tag}-", "succeeded"),
        "duplicates": sum(c - 1 for c in completed.values() if c > 1),
        "most running at once": max((c.running_all for c in calls), default=0),
        "most running on one VM": max((c.running_vm for c in calls), default=0),
    }
    net = [(loaded.n, done[label], cpu[label] - idle[label] * took) for label in labels]
    return Phase(row, share, net, sum(idle.values()) / len(idle))


def cpu_fit(points: list[tuple[int, int, float]]) -> tuple[float, float, float]:
    """Least squares of a shard's CPU (beyond its idle cost) over ``a`` * the events of
    the whole cluster + ``b`` * its own: (a, b, the worst misfit of a point, %). Every
    shard decodes every worker's task event (the completions fan out, design §7), so
    ``a`` is what each shard pays for any event, ``b`` what it pays for its own."""
    stt = sum(t * t for t, _, _ in points)
    sto = sum(t * o for t, o, _ in points)
    soo = sum(o * o for _, o, _ in points)
    sty = sum(t * c for t, _, c in points)
    soy = sum(o * c for _, o, c in points)
    det = stt * soo - sto * sto
    a, b = (sty * soo - soy * sto) / det, (stt * soy - sto * sty) / det
    misfit = max(abs(a * t + b * o - c) / c for t, o, c in points)
    return a, b, 100 * misfit


def cpu_rows(measured: dict[int, list[Phase]]) -> list[dict[str, Any]]:
    """Per phase: the fit over every shard of the 1, 2 and 4 shard runs, the single
    dispatcher's CPU per event beside it, and what the fit gives N shards with a core
    each (hosts spread evenly): each shard's CPU per second is its idle cost +
    a * R + b * R / N, so R = (1 - idle) / (a + b / N), and never beyond (1 - idle) / a."""
    rows: list[dict[str, Any]] = []
    for i, tag in enumerate((FLOOD, SLOTS)):
        points = [p for shards in CONFIGURATIONS if shards for p in measured[shards][i].cpu]
        a, b, misfit = cpu_fit(points)
        idle = max(measured[shards][i].idle for shards in CONFIGURATIONS if shards)
        single = measured[0][i].cpu[0]
        rows.append(
            {
                "phase": tag,
                "single dispatcher: CPU ms/event": 1000 * single[2] / single[1],
                "each shard: CPU ms per event of the whole cluster": 1000 * a,
                "each shard: CPU ms per event of its own": 1000 * b,
                "fit's worst misfit %": misfit,
                "capacity /s with a core per shard, 1 / 2 / 4 / 8 shards": " / ".join(
                    f"{(1 - idle) / (a + b / n):,.0f}" for n in (1, 2, 4, 8)
                ),
                "ceiling /s, any number of shards": (1 - idle) / a if a > 0 else None,
            }
        )
    return rows


def measure(broker: Broker, shards: int) -> list[Phase]:
    with stack(broker, shards) as run:
        return [
            phase(run, FLOOD, FLOOD_PER_KEY, 0.0),
            phase(run, SLOTS, SLOTS_PER_KEY, SLOTS_HOLD_S),
        ]


def kill(broker: Broker) -> dict[str, Any]:
    """Two shards under load; one killed -9; the takeover and the accounting."""
    tag = "kill"
    with stack(broker, 2, log="INFO") as run:
        loaded = load(run, tag, KILL_PER_KEY, KILL_HOLD_S)
        survivor, victim = run.dispatchers
        resume(run)
        wait_for(
            lambda: (
                len(run.receiver.calls()) >= loaded.n // 4
                and survivor.stats()["dispatched_total"] > 0
                and victim.stats()["dispatched_total"] > 0
            ),
            300,
            "a quarter of the calls started, both shards dispatching",
        )
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.time()
        victim.service.proc.wait(10)  # type: ignore[union-attr]
        try:
            wait_for(
                lambda: survivor.serving() == set(range(PARTITIONS)),
                20 * LEASE_S,
                "the survivor serves every partition",
            )
            takeover: float | None = time.time() - killed
        except AssertionError:
            takeover = None
        try:
            wait_for(
                lambda: run.count(f"{tag}-", "succeeded", "failed") == loaded.n,
                600,
                "the kill backlog finished",
            )
            finished = True
        except AssertionError:
            finished = False
        rows = run.dispatches(f"{tag}-")
        calls = [c for c in run.receiver.calls() if c.event_id.startswith(f"{tag}-")]
        statuses = Counter(status for _, _, _, status in rows)
        logs = "" if finished and takeover else f"{run.stack.log_dir}\n{run.stack.logs(60)}"
    dead = {h for h, o in loaded.owner.items() if o == victim.label}
    after = [at for _, host, at, _ in rows if host in dead and at is not None and at > killed]
    resumed = min(after) - killed if after else None
    own = sorted(
        at for _, host, at, _ in rows if host not in dead and at is not None and at > killed - 1
    )
    horizon = killed + (resumed or takeover or 0.0) + 1
    gaps = [b - a for a, b in itertools.pairwise(own) if a < horizon]
    completed = Counter(c.event_id for c in calls if c.outcome == COMPLETED)
    row: dict[str, Any] = {
        "events": loaded.n,
        "action s": KILL_HOLD_S,
        "hosts: survivor / killed": f"{HOSTS - len(dead)} / {len(dead)}",
        "killed after calls": sum(1 for c in calls if c.started < killed),
        "takeover s": takeover,
        "dispatching resumed for the killed shard's hosts s": resumed,
        "÷ lease": None if resumed is None else resumed / LEASE_S,
        "survivor's own hosts: longest pause s": max(gaps, default=None),
        "lease s": LEASE_S,
        "all finished": finished,
        "lost": loaded.n - statuses.get("succeeded", 0),
        "duplicates": sum(c - 1 for c in completed.values() if c > 1),
        "calls not completed": sum(1 for c in calls if c.outcome != COMPLETED),
        "violations": sum(1 for c in calls if c.running_all > LIMIT or c.running_vm > 1),
        "most running at once": max((c.running_all for c in calls), default=0),
    }
    if logs:
        row["logs"] = logs
    return row


def run() -> None:
    base = Path(tempfile.mkdtemp(prefix="carousel-bench-shards-broker-"))
    rows: list[dict[str, Any]] = []
    with broker(base) as b:
        measured = {shards: measure(b, shards) for shards in CONFIGURATIONS}
        kills = [kill(b) for _ in range(KILLS)]
    for i in range(2):  # flood, then slots
        single = measured[0][i].share
        for shards in CONFIGURATIONS:
            p = measured[shards][i]
            p.row["worst ÷ single's share %"] = error(p.share, single)[0]
            rows.append(p.row)
    flood = [r for r in rows if r["phase"] == FLOOD]
    slots = [r for r in rows if r["phase"] == SLOTS]
    common: dict[str, Any] = {
        "broker": b.what,
        "ledger": "PostgreSQL, a database of its own on the local server",
        "hosts": HOSTS,
        "vms_per_host": VMS,
        "max_parallel": LIMIT,
        "partitions": PARTITIONS,
        "lease_s": LEASE_S,
        "notes": [
            f"DISPATCHER_LEASE_SECONDS {LEASE_S:g} (the default is 10): a takeover scales with it",
            "every process (the broker's nodes, PostgreSQL, the dispatchers, producer, "
            "worker, receiver) shares this machine's cores, with whatever else ran on it "
            "(the load average as the run ended is in machine): absolute rates are the "
            "machine's, CPU per event is each dispatcher's own",
            "CPU per event depends on the rate it was measured at (smaller batches when "
            "slower): the capacities are at this machine's rates",
        ],
    }
    save(
        "shards",
        f"Dispatcher shards on a real stack ({b.what}, a PostgreSQL ledger), single "
        "dispatcher / 1 / 2 / 4 shards: decision capacity "
        + " / ".join(f"{r['decision capacity /s']:,.0f}" for r in flood)
        + " events per dispatcher core-second, measured "
        + " / ".join(f"{r['dispatched/s in the window']:,.0f}" for r in flood)
        + "/s on this machine; fairness error with the slots the limit "
        + " / ".join(f"{r['worst ÷ 1/H %']:.1f}" for r in slots)
        + " %",
        rows,
        **common,
    )
    fits = cpu_rows(measured)
    flood_fit = fits[0]
    save(
        "shards_cpu",
        "Dispatcher shards: each shard's CPU ≈ "
        f"{flood_fit['each shard: CPU ms per event of the whole cluster']:.2f} ms per event "
        f"of the whole cluster + {flood_fit['each shard: CPU ms per event of its own']:.2f} ms "
        "per event of its own (instant actions); with a core per shard, at most "
        f"{flood_fit['ceiling /s, any number of shards'] or 0:,.0f} events/s whatever the "
        "number of shards",
        fits,
        **common,
    )
    worst = max(
        (k["dispatching resumed for the killed shard's hosts s"] or float("inf")) for k in kills
    )
    save(
        "shards_kill",
        f"A shard killed -9 under load, 2 shards, {KILLS} runs: takeover "
        + " / ".join(f"{k['takeover s'] or float('inf'):.1f}" for k in kills)
        + f" s, dispatching resumed for its hosts within {worst:.1f} s (lease {LEASE_S:g} s); "
        f"lost {sum(k['lost'] for k in kills)}, duplicates "
        f"{sum(k['duplicates'] for k in kills)}, violations "
        f"{sum(k['violations'] for k in kills)}",
        kills,
        **common,
    )


if __name__ == "__main__":
    run()
