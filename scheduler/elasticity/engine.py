"""The elasticity control loop: observe, decide (the pure scaling rules), act through a provider.

The method names follow the elasticity provider it descends from: ``check_slackers``,
``spawn``, ``teardown``, ``is_booting``, ``launch``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from scheduler.elasticity import scaling
from scheduler.elasticity.control import CeleryControl
from scheduler.elasticity.errors import (
    ElasticityError,
    InsufficientResources,
    MinimumWorkersReached,
    NoIdleWorkersError,
    NoTearDownTargets,
)
from scheduler.elasticity.history import PoolHistory
from scheduler.elasticity.kubernetes import is_placeholder
from scheduler.elasticity.model import (
    Backlog,
    Decision,
    Observation,
    ProfileConfig,
    ProfileMemory,
    WorkerState,
    WorkerView,
)
from scheduler.elasticity.providers import Provider, WorkerHandle, profile_of
from scheduler.elasticity.tracker import WorkerTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Something the loop did or could not do, for /status."""

    at: float
    profile: str
    kind: str  # spawned, retired, registered, slacker, lost, aborted-retire, error, or a Condition
    detail: str


@dataclass
class Engine:
    configs: Mapping[str, ProfileConfig]
    budget: int
    provider: Provider
    tracker: WorkerTracker
    control: CeleryControl
    queue_of: Callable[[str], str]  # profile -> actions queue name
    backlog_of: Callable[[str, int], Backlog]  # (profile, running tasks) -> its backlog
    #: whether the active dispatcher is paused (its waiting events do not count then)
    paused_of: Callable[[], bool] = lambda: False
    heartbeat_timeout: float = 10.0
    slacker_threshold: float = 60.0
    drain_timeout: float = 120.0
    dry_run: bool = False
    clock: Callable[[], float] = time.time
    handles: dict[str, WorkerHandle] = field(default_factory=dict)
    draining: dict[str, float] = field(default_factory=dict)
    memories: dict[str, ProfileMemory] = field(default_factory=dict)
    decisions: deque[tuple[Decision, Observation]] = field(
        default_factory=lambda: deque(maxlen=200)
    )
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=200))
    last: dict[str, Decision] = field(default_factory=dict)
    #: each profile's pool against its backlog over the last hour, for /history
    history: PoolHistory = field(default_factory=PoolHistory)

    def __post_init__(self) -> None:
        for name in self.configs:
            self.memories.setdefault(name, ProfileMemory())
        if sum(c.min_workers for c in self.configs.values()) > self.budget:
            raise ValueError("the profiles' minimums exceed the worker budget")
        self.lock = threading.RLock()

    # -- observing -----------------------------------------------------------------
    def workers(self, profile: str) -> list[WorkerView]:
        exited = {
            n for n, h in self.handles.items() if h.profile == profile and self.provider.exited(h)
        }
        spawned = {n: h.spawned_at for n, h in self.handles.items() if h.profile == profile}
        now = self.clock()
        since = self.tracker.stream_since()
        return scaling.classify(
            profile,
            spawned,
            self.tracker.nodes(),
            self.draining,
            exited,
            now,
            self.heartbeat_timeout,
            judge_heartbeats=since is not None and now - since >= self.heartbeat_timeout,
        )

    def observe(self, profile: str, paused: bool = False) -> Observation:
        views = tuple(self.workers(profile))
        nodes = self.tracker.nodes()
        running = sum(nodes[w.name].active for w in views if w.name in nodes)
        backlog = self.backlog_of(profile, running)
        return Observation(
            profile,
            backlog.total,
            views,
            self.tracker.mean_action_seconds(profile),
            waiting=backlog.waiting,
            paused=paused,
        )

    def is_booting(self, name: str) -> bool:
        handle = self.handles.get(name)
        return handle is not None and any(
            w.name == name and w.state is WorkerState.BOOTING for w in self.workers(handle.profile)
        )

    def ready(self) -> bool:
        """Every profile has at least its minimum of workers up (idle or busy)."""
        return all(
            sum(w.state in (WorkerState.IDLE, WorkerState.BUSY) for w in self.workers(p))
            >= cfg.min_workers
            for p, cfg in self.configs.items()
        )

    # -- deciding ------------------------------------------------------------------
    def evaluate(self) -> list[tuple[Decision, Observation]]:
        paused = self.paused_of()
        observations = [self.observe(p, paused) for p in self.configs]
        decisions = scaling.decide(
            observations, self.memories, self.configs, self.budget, self.clock()
        )
        return list(zip(decisions, observations, strict=True))

    # -- acting --------------------------------------------------------------------
    def spawn(self, profile: str) -> WorkerHandle:
        if len(self.handles) >= self.budget:
            raise InsufficientResources(f"budget of {self.budget} workers used up")
        handle = self.provider.spawn(self.configs[profile], self.clock())
        self.handles[handle.name] = handle
        self._note(profile, "spawned", handle.name)
        return handle

    def teardown(self, profile: str) -> str:
        """Retire one idle worker of ``profile`` gracefully; its name."""
        views = self.workers(profile)
        if not views:
            raise NoTearDownTargets(f"profile {profile} has no workers")
        up = [w for w in views if w.state in scaling.CAPACITY]
        if len(up) <= self.configs[profile].min_workers:
            raise MinimumWorkersReached(
                f"profile {profile} is at its minimum of {self.configs[profile].min_workers}"
            )
        for candidate in scaling.retire_order(views):
            if self._retire(candidate):
                return candidate.name
        raise NoIdleWorkersError(f"no idle worker of profile {profile}")

    def _retire(self, worker: WorkerView) -> bool:
        """Cancel its consumer, re-check it holds nothing, then warm shutdown. If a task
        slipped in meanwhile, give it its consumer back and do not retire it."""
        queue = self.queue_of(worker.profile)
        self.draining[worker.name] = self.clock()
        self.control.cancel_consumer(queue, worker.name)
        if self.control.holds_tasks(worker.name):
            self.control.add_consumer(queue, worker.name)
            del self.draining[worker.name]
            self._note(worker.profile, "aborted-retire", f"{worker.name} took a task")
            return False
        self.control.shutdown(worker.name)
        self.provider.stop(self.handles[worker.name], graceful=True)
        self._note(worker.profile, "retired", worker.name)
        return True

    def check_slackers(self) -> list[str]:
        """Kill spawned workers that never registered within the threshold (they are
        replaced by the next decision, as capacity dropped)."""
        killed = []
        for profile in self.configs:
            for w in scaling.slackers(self.workers(profile), self.clock(), self.slacker_threshold):
                self.provider.stop(self.handles[w.name], graceful=False)
                self._drop(w.name)
                self._note(profile, "slacker", f"{w.name} never registered; killed")
                killed.append(w.name)
        return killed

    def reap(self) -> None:
        """Forget workers that are gone: lost ones (killed for good measure, then
        replaced by the next decision) and drained ones that exited."""
        now = self.clock()
        for profile in self.configs:
            for w in self.workers(profile):
                handle = self.handles[w.name]
                if w.state is WorkerState.LOST:
                    if self._answers(w.name, handle, now):
                        self._note(profile, "answered", f"{w.name}: silent, but answered a ping")
                        continue
                    self.provider.stop(handle, graceful=False)
                    self._drop(w.name)
                    self._note(profile, "lost", f"{w.name}: heartbeats stopped or it exited")
                elif w.state is WorkerState.DRAINING:
                    if self.provider.exited(handle):
                        self._drop(w.name)
                    elif now - w.since > self.drain_timeout:
                        self.provider.stop(handle, graceful=False)

    def _answers(self, name: str, handle: WorkerHandle, now: float) -> bool:
        """A worker that only went silent (its process lives, it did not say goodbye) is
        asked directly before it is killed: a starved or briefly cut-off worker answers."""
        node = self.tracker.nodes().get(name)
        if self.provider.exited(handle) or node is None or node.offline:
            return False
        if not self.control.ping(name):
            return False
        self.tracker.touch(name, now)
        return True

    def adopt(self) -> None:
        """Give a registered worker we do not know yet the place of a placeholder of its
        profile (providers that cannot name workers up front, e.g. Kubernetes)."""
        known = set(self.handles)
        for node, info in self.tracker.nodes().items():
            profile = profile_of(node)
            if node in known or info.offline or profile is None or profile not in self.configs:
                continue
            placeholders = sorted(
                (
                    h
                    for h in self.handles.values()
                    if h.profile == profile and is_placeholder(h.name)
                ),
                key=lambda h: h.spawned_at,
            )
            if placeholders:
                old = placeholders[0]
                del self.handles[old.name]
                self.handles[node] = WorkerHandle(node, profile, old.spawned_at, old.pid)
                self._note(profile, "registered", f"{node} (was {old.name})")

    def _drop(self, name: str) -> None:
        self.handles.pop(name, None)
        self.draining.pop(name, None)
        self.tracker.forget(name)

    def tick(self) -> list[Decision]:
        """One evaluation: reap, slackers, decide, act. Errors are recorded per
        profile; none escapes to stop the loop."""
        with self.lock:
            self.adopt()
            self.reap()
            self.check_slackers()
            results = self.evaluate()
            for decision, observation in results:
                self.decisions.append((decision, observation))
                self.last[decision.profile] = decision
                self.history.record(
                    decision.profile,
                    decision.at,
                    {s: observation.count(s) for s in WorkerState},
                    decision.backlog,
                    decision.target,
                )
                if decision.blocked_by:
                    self._note(decision.profile, decision.blocked_by, decision.reason)
                if self.dry_run:
                    if decision.spawn or decision.retire:
                        log.info(
                            "dry run: profile %s would spawn %d, retire %d (%s)",
                            decision.profile,
                            decision.spawn,
                            decision.retire,
                            decision.reason,
                        )
                    continue
                self._act(decision)
            return [d for d, _ in results]

    def _act(self, decision: Decision) -> None:
        try:
            for _ in range(decision.spawn):
                self.spawn(decision.profile)
            for _ in range(decision.retire):
                self.teardown(decision.profile)
        except ElasticityError as exc:
            self._note(decision.profile, exc.condition, str(exc))
        except Exception as exc:
            log.exception("acting on profile %s failed", decision.profile)
            self._note(decision.profile, "error", repr(exc))

    def _note(self, profile: str, kind: str, detail: str) -> None:
        last = self.events[-1] if self.events else None
        if last and (last.profile, last.kind, last.detail) == (profile, kind, detail):
            return  # the same condition again: once is enough
        self.events.append(Event(self.clock(), profile, kind, detail))
        log.info("[%s] %s: %s", profile, kind, detail)

    def launch(self, evaluation_interval: float, stop: threading.Event) -> None:
        """Evaluate every ``evaluation_interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("elasticity tick failed; the loop goes on")
            stop.wait(max(0.0, evaluation_interval - (time.monotonic() - started)))
