"""The ``kubernetes-retire`` fault: the elasticity engine and its Kubernetes provider
retire workers one after another against a stand-in for the API server
(:mod:`harness.fake_kubernetes`), whose ReplicaSet deletes pods in the real controller's
order, while the pods of retired workers go away in the ways a cluster has: promptly,
slower than ``DRAIN_TIMEOUT``, or by ending in a terminal phase while still listed.

It runs in this process, beside the stack (nothing of the stack is touched). After every
evaluation (:meth:`RetireDrill.tick`) a :class:`RetireDrill` checks what Kubernetes and the
engine must agree on; each failed check is a *violation* in the suite's accounting:

- the Deployment's replicas equal the workers the engine keeps (idle, busy, booting): a
  retirement lowers them once, a retired worker's pod leaving changes nothing;
- the replicas never go below the profile's ``min_workers``;
- the ReplicaSet never deletes a busy worker's pod;
- a retired worker whose pod has gone (or ended) no longer holds a slot of the budget
  after the next evaluation.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.elasticity_doubles import Clock, FakeControl
from harness.fake_kubernetes import TERMINAL, FakeKubernetes
from harness.faults.accounting import VIOLATION, Anomaly
from harness.faults.base import Ctx, FaultResult
from scheduler.elasticity import scaling
from scheduler.elasticity.engine import Engine
from scheduler.elasticity.kubernetes import KubernetesProvider, is_placeholder
from scheduler.elasticity.model import Backlog, ProfileConfig
from scheduler.elasticity.tracker import WorkerTracker

PROFILE = "default"
PREFIX = "carousel-worker-"
DEPLOYMENT = f"{PREFIX}{PROFILE}"
#: how a retired worker's pod goes: removed at once; still terminating past the drain
#: timeout; or in the ``Failed`` phase, still listed for a while
PROMPT, SLOW, FAILED = "prompt", "slow", "failed"
KINDS = (PROMPT, SLOW, FAILED)


def node(pod: str) -> str:
    """The Celery node name of the worker in ``pod`` (deploy/kubernetes/)."""
    return f"elastic.{PROFILE}.{pod}@{pod}"


@dataclass
class Problem:
    tick: int
    pod: str
    detail: str


@dataclass
class RetireDrill:
    """One profile of ``workers`` workers (the newest one busy throughout) brought down
    to ``min_workers``, one retirement at a time. The drill plays the kubelet and the
    workers' Celery events; the time is a :class:`Clock` it moves by ``interval``."""

    workers: int = 4
    min_workers: int = 1
    drain_timeout: float = 30.0
    interval: float = 5.0
    api: FakeKubernetes = field(init=False)
    provider: KubernetesProvider = field(init=False)
    engine: Engine = field(init=False)
    clock: Clock = field(default_factory=Clock)
    control: FakeControl = field(default_factory=FakeControl)
    tracker: WorkerTracker = field(default_factory=lambda: WorkerTracker(app=None))
    demand: int = 0  # workers the backlog asks for
    busy: set[str] = field(default_factory=set)  # pods
    #: how the next retired pods go (:data:`KINDS`), and the pods going that way
    going: list[str] = field(default_factory=list)
    leaving: dict[str, tuple[str, int]] = field(default_factory=dict)  # pod -> kind, ticks
    #: pods whose worker no longer runs (gone from the API or in a terminal phase): when
    ended: dict[str, int] = field(default_factory=dict)
    ticks: int = 0
    problems: list[Problem] = field(default_factory=list)
    history: list[tuple[int, int]] = field(default_factory=list)  # (replicas, slots)

    def __post_init__(self) -> None:
        self.api = FakeKubernetes({DEPLOYMENT: 0})
        self.provider = KubernetesProvider(self.api.url, "ns1", PREFIX, token=self.api.token)
        self.config = ProfileConfig(
            name=PROFILE,
            min_workers=self.min_workers,
            max_workers=self.workers,
            scale_down_window=0.0,  # each step down at once: the drill is about retiring
            scale_down_utilisation=1.0,  # the busy worker holds no shrink back
        )
        self.engine = Engine(
            configs={PROFILE: self.config},
            budget=self.workers,
            provider=self.provider,
            tracker=self.tracker,
            control=self.control,  # type: ignore[arg-type]
            queue_of=lambda p: f"actions.{p}",
            backlog_of=self.backlog,
            drain_timeout=self.drain_timeout,
            clock=self.clock,
        )

    def backlog(self, profile: str, running: int) -> Backlog:
        """The running tasks, and 10 waiting per worker asked for beyond the busy ones
        (10 s of 1 s actions: one worker each at the default target latency)."""
        return Backlog(running + 10 * max(0, self.demand - len(self.busy)))

    def close(self) -> None:
        self.provider.http.close()
        self.api.close()

    @property
    def replicas(self) -> int:
        return self.api.replicas[DEPLOYMENT]

    def slots(self) -> int:
        """Budget slots the engine holds for this profile."""
        return len(self.engine.handles)

    def capacity(self) -> int:
        return sum(w.state in scaling.CAPACITY for w in self.engine.workers(PROFILE))

    # -- one evaluation, and what the cluster does after it --------------------------------
    def tick(self) -> None:
        self.ticks += 1
        self.clock.now += self.interval
        for pod in self.api.names(DEPLOYMENT, "Running"):
            active = 1 if pod in self.busy else 0
            self.tracker.on_event(
                {"type": "worker-heartbeat", "hostname": node(pod), "active": active},
                self.clock.now,
            )
        ended_before = dict(self.ended)
        self.engine.tick()
        self._kubelet()
        self._check(ended_before)
        self.history.append((self.replicas, self.slots()))

    def _kubelet(self) -> None:
        for pod in self.api.names(DEPLOYMENT, "Pending"):
            self.api.start(pod)
            self.tracker.on_event({"type": "worker-online", "hostname": node(pod)}, self.clock.now)
        for pod in self.api.terminating():
            if pod not in self.leaving:
                kind = self.going.pop(0) if self.going else PROMPT
                ticks = {PROMPT: 0, SLOW: int(self.drain_timeout / self.interval) + 3}
                self.leaving[pod] = (kind, ticks.get(kind, 2))
            kind, left = self.leaving[pod]
            if kind == FAILED and self.api.pods[pod].phase not in TERMINAL:
                self.api.pods[pod].phase = "Failed"  # its containers stopped; still listed
            if left <= 0:
                self.api.finish(pod)
            else:
                self.leaving[pod] = (kind, left - 1)
        for pod in list(self.leaving) + list(self.busy):
            listed = self.api.pods.get(pod)
            if (listed is None or listed.phase in TERMINAL) and pod not in self.ended:
                self.ended[pod] = self.ticks
                self.tracker.on_event({"type": "worker-offline", "hostname": node(pod)})

    def _check(self, ended_before: dict[str, int]) -> None:
        def problem(pod: str, detail: str) -> None:
            if (pod, detail) not in {(p.pod, p.detail) for p in self.problems}:
                self.problems.append(Problem(self.ticks, pod, detail))  # each once

        replicas, capacity = self.replicas, self.capacity()
        if replicas != capacity:
            problem(DEPLOYMENT, f"replicas {replicas}, the engine keeps {capacity} workers")
        if replicas < self.min_workers:
            problem(DEPLOYMENT, f"replicas {replicas} below min_workers {self.min_workers}")
        for pod in self.busy & set(self.api.scaled_away):
            problem(pod, "the ReplicaSet deleted a busy worker's pod")
        for name in self.engine.handles:
            pod = name.split("@", 1)[-1]
            if not is_placeholder(name) and pod in ended_before:
                problem(pod, f"its worker ended at tick {ended_before[pod]}, it still holds a slot")

    # -- the drill ---------------------------------------------------------------------
    def grow(self) -> None:
        """Up to ``workers`` registered workers; the newest pod's worker is busy (the one
        a ReplicaSet told to remove one pod too many would pick among ready equals)."""
        self.demand = self.workers
        for _ in range(5):
            self.tick()
            if self.engine.ready() and len(self.tracker.nodes()) == self.workers:
                break
        self.tick()  # adopt the last ones
        newest = max(self.api.pods.values(), key=lambda p: p.created)
        self.busy.add(newest.name)
        self.control.busy.add(node(newest.name))

    def retire(self, *kinds: str) -> None:
        """``len(kinds)`` workers fewer asked for at once; their pods go the ways of
        ``kinds``. Evaluations until the engine has let them go (or twice the drain
        timeout has passed)."""
        self.going.extend(kinds)
        self.demand = max(self.min_workers, self.demand - len(kinds))
        slots = self.slots()
        for _ in range(int(2 * self.drain_timeout / self.interval) + 4):
            self.tick()
            if self.slots() <= slots - len(kinds) and not self.engine.draining:
                break

    def run(self, steps: Sequence[Sequence[str]]) -> list[Problem]:
        """Grow; per step, retire as many workers at once as it names kinds; then ask for
        none at all: the minimum must hold. The problems found on the way."""
        self.grow()
        for kinds in steps:
            self.retire(*kinds)
        self.demand = 0
        for _ in range(int(self.drain_timeout / self.interval) + 2):
            self.tick()
        return self.problems


def kubernetes_retire(ctx: Ctx, drills: int = 3) -> FaultResult:
    """``drills`` drills of 4 workers brought down to 1 by three retirements, one at a
    time in an order drawn at random, and one drill retiring the three at once; each
    problem a drill finds is a violation."""
    res = FaultResult("kubernetes-retire")
    for i in range(drills + 1):
        kinds = list(KINDS)
        ctx.rng.shuffle(kinds)
        steps = [kinds] if i == drills else [[k] for k in kinds]
        drill = RetireDrill()
        try:
            found = drill.run(steps)
        finally:
            drill.close()
        res.injected += len(kinds)
        ctx.log(
            f"  drill {i + 1} ({steps}): replicas/slots per tick "
            f"{' '.join(f'{r}/{s}' for r, s in drill.history)}; {len(found)} problem(s)"
        )
        now = time.time()
        res.anomalies += [
            Anomaly(
                VIOLATION, f"kubernetes-retire/{i + 1}/{p.pod}", now, f"tick {p.tick}: {p.detail}"
            )
            for p in found
        ]
    if res.anomalies:
        res.note = f"{len(res.anomalies)} violation(s): {res.anomalies[0].detail}"
    return res


def drill_once(seed: int = 0) -> FaultResult:
    """The fault without the suite (``python -m harness.faults.kubernetes``)."""
    ctx = Ctx(stack=None, load=None, rng=random.Random(seed), log=print)  # type: ignore[arg-type]
    return kubernetes_retire(ctx)


if __name__ == "__main__":
    result = drill_once()
    print(f"injected {result.injected}, violations {len(result.anomalies)}")
    raise SystemExit(1 if result.anomalies else 0)
