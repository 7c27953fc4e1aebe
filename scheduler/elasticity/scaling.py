"""The scaling rules: how many workers each profile should have, as pure functions of
what was observed and the time. No clock, no I/O, no Celery.

Per profile, in order (:func:`decide` runs steps 1-4 for every profile, then shares the
budget over them, then runs steps 5-6 for each):

1. **target tracking** — the backlog, at the learnt mean action time, should drain within
   ``target_latency``: ``raw = ceil(backlog * seconds / (concurrency * target_latency))``,
   bounded by ``[min_workers, max_workers]``. Only work that can run counts: while the
   dispatcher is paused (``Observation.paused``), its waiting events do not — only the
   tasks it dispatched before — so a paused dispatcher's pool goes to its minimum;
2. **utilisation band** — as the Kubernetes-like deployment it descends from: a pool at
   least 80 % busy with work waiting grows by one even if the backlog alone would not
   ask for it; a pool more than 20 % busy does not shrink;
3. **tolerance** — a value within ``tolerance`` of the current capacity is no change
   (the HPA's 10 % band, so steady load does not flap);
4. **stabilisation windows** — going up takes the *lowest* recommendation of the last
   ``scale_up_window`` seconds, going down the *highest* of the last ``scale_down_window``
   (as the HPA does), so a dip or a spike does not whipsaw the pool;
5. **one scaling event in flight** — while a worker is booting or draining, the profile
   waits (unless it is below its minimum: recovery never waits);
6. **budget** — the total budget is shared max-min fairly: each profile gets its minimum,
   then the rest goes one worker at a time to the profiles that still want more, so an
   idle profile's share is lent to the busy ones.

Capacity counts idle, busy *and booting* workers, so a worker on its way is not asked
for twice. Only idle workers are ever retired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from scheduler.elasticity.model import (
    Condition,
    Decision,
    NodeInfo,
    Observation,
    ProfileConfig,
    ProfileMemory,
    WorkerState,
    WorkerView,
)

CAPACITY = (WorkerState.IDLE, WorkerState.BUSY, WorkerState.BOOTING)


class Demand(NamedTuple):
    """What the backlog asks for (step 1), and why."""

    workers: int  # bounded by the profile's minimum and maximum
    action_seconds: float  # the learnt mean, else the profile's default
    why: str  # what decided it, with the numbers: the backlog, the minimum or the maximum
    #: the same cause in words that stay the same while the count does, for a pool that
    #: keeps its size ("steady at 1: the minimum is 1")
    standing: str


def workable(obs: Observation) -> int:
    """The backlog workers can serve: all of it; while the dispatcher is paused, only the
    tasks it dispatched before (its waiting events cannot be dispatched)."""
    return obs.backlog - obs.waiting if obs.paused else obs.backlog


def raw_workers(obs: Observation, cfg: ProfileConfig) -> Demand:
    """Workers the backlog asks for, bounded by the profile; the action time used; and
    why that many, naming what decided it: the backlog, the minimum or the maximum —
    and a paused dispatcher, whose waiting events are not counted."""
    learnt = obs.mean_action_seconds
    seconds = cfg.default_action_seconds if learnt is None else learnt
    backlog = workable(obs)
    want = 0
    if backlog > 0:
        want = math.ceil(backlog * seconds / (cfg.concurrency * cfg.target_latency))
    raw = max(cfg.min_workers, min(cfg.max_workers, want))
    if want < cfg.min_workers:
        why = f"the minimum is {cfg.min_workers} (backlog {backlog} asks for {want})"
        standing = f"the minimum is {cfg.min_workers}"
    elif want > cfg.max_workers:
        why = f"backlog {backlog} asks for {want}, capped at the maximum {cfg.max_workers}"
        standing = f"the maximum is {cfg.max_workers}"
    else:
        why = f"backlog {backlog} asks for {want}"
        standing = f"the backlog asks for {want}"
    if obs.paused:
        held = f", so {obs.waiting} waiting event(s) are not counted" if obs.waiting else ""
        why = f"the dispatcher is paused{held}; {why}"
        standing = f"the dispatcher is paused; {standing}"
    return Demand(raw, seconds, why, standing)


def utilisation_band(
    obs: Observation, cfg: ProfileConfig, raw: int, capacity: int
) -> tuple[int, str | None]:
    """The Kubernetes-style band, in Celery terms: a pool at least
    ``scale_up_utilisation`` busy *with work waiting* (work that can run: see
    :func:`workable`) asks for one more worker (being busy with nothing queued is no
    reason to grow); a pool more than ``scale_down_utilisation`` busy does not shrink."""
    up = obs.count(WorkerState.IDLE, WorkerState.BUSY)
    if up == 0:
        return raw, None
    busy = obs.count(WorkerState.BUSY)
    utilisation = busy / up
    waiting = workable(obs) - busy * cfg.concurrency
    if (
        utilisation >= cfg.scale_up_utilisation
        and waiting > 0
        and raw <= capacity
        and capacity < cfg.max_workers
    ):
        return capacity + 1, f"{utilisation:.0%} busy with {waiting} waiting"
    if raw < capacity and utilisation > cfg.scale_down_utilisation:
        return capacity, f"{utilisation:.0%} busy: too busy to shrink"
    return raw, None


def stabilize(
    memory: ProfileMemory,
    raw: int,
    capacity: int,
    cfg: ProfileConfig,
    now: float,
    why: str = "",
    standing: str = "",
) -> tuple[int, str]:
    """Apply the tolerance band and the stabilisation windows (records ``raw``); ``why``
    says where ``raw`` comes from, ``standing`` the same without the backlog's numbers
    (see :class:`Demand`): what a pool that keeps its size says."""
    why = why or f"{raw} asked for"
    standing = standing or f"{raw} asked for"
    memory.recommendations.append((now, raw))
    horizon = now - max(cfg.scale_up_window, cfg.scale_down_window)
    memory.recommendations = [(t, r) for t, r in memory.recommendations if t >= horizon]
    if raw == capacity:
        return capacity, f"steady at {capacity}: {standing}"
    # |raw/capacity - 1| <= tolerance, in a form that keeps the band's edges inside it
    if capacity >= cfg.min_workers and abs(raw - capacity) <= cfg.tolerance * capacity + 1e-9:
        tolerance = f"{cfg.tolerance:.0%}"
        return capacity, f"steady at {capacity}: {standing}, within the tolerance ({tolerance})"
    if raw > capacity:
        since = now - cfg.scale_up_window
        floor = min(r for t, r in memory.recommendations if t >= since)
        if floor <= capacity:
            window = f"{cfg.scale_up_window:g} s"
            return capacity, f"{why}; the scale-up window ({window}) holds {capacity}"
        return floor, why
    since = now - cfg.scale_down_window
    ceiling = max(r for t, r in memory.recommendations if t >= since)
    if ceiling >= capacity:
        window = f"{cfg.scale_down_window:g} s"
        return capacity, (
            f"{why}; the scale-down window holds {capacity}: {ceiling} asked for "
            f"within the last {window}"
        )
    return ceiling, why


def allot(demands: Mapping[str, int], minimums: Mapping[str, int], budget: int) -> dict[str, int]:
    """Max-min fair shares of ``budget``: minimums first, then each further worker to
    the profile that still wants more and has the fewest (ties: profile order)."""
    shares = {p: min(minimums[p], demands[p]) for p in demands}
    left = budget - sum(shares.values())
    wanting = [p for p in demands if demands[p] > shares[p]]
    while left > 0 and wanting:
        p = min(wanting, key=lambda q: shares[q])
        shares[p] += 1
        left -= 1
        if shares[p] >= demands[p]:
            wanting.remove(p)
    return shares


@dataclass(frozen=True)
class Plan:
    """Steps 1-4 for one profile: what it would have, before the budget is shared."""

    raw: int  # workers the backlog (and the utilisation band) asks for
    stabilized: int  # after tolerance and the stabilisation windows
    action_seconds: float
    reason: str


def plan_profile(obs: Observation, memory: ProfileMemory, cfg: ProfileConfig, now: float) -> Plan:
    """Steps 1-4: target tracking, the utilisation band, tolerance and the
    stabilisation windows (records the recommendation in ``memory``)."""
    capacity = obs.count(*CAPACITY)
    raw, seconds, why, standing = raw_workers(obs, cfg)
    raw, band = utilisation_band(obs, cfg, raw, capacity)
    stable, reason = stabilize(memory, raw, capacity, cfg, now, why, standing)
    if band:
        reason = f"{reason} ({band})"
    return Plan(raw, stable, seconds, reason)


def occupied(observations: Sequence[Observation]) -> int:
    """Workers that take budget: the ones that exist or are coming, until they are gone."""
    return sum(
        o.count(WorkerState.IDLE, WorkerState.BUSY, WorkerState.BOOTING, WorkerState.DRAINING)
        for o in observations
    )


def decide_profile(
    obs: Observation, cfg: ProfileConfig, plan: Plan, share: int, free: int, now: float
) -> Decision:
    """Steps 5 and 6 for one profile: its plan, within its ``share`` of the budget and the
    ``free`` budget left, unless a scaling event is in flight. Only idle workers retire."""
    capacity = obs.count(*CAPACITY)
    target = min(plan.stabilized, share)
    reason = plan.reason
    if target < plan.stabilized:
        reason = f"{reason}; its share of the budget (ELASTICITY_BUDGET) is {share}"
    spawn = retire = 0
    blocked: Condition | None = None
    in_flight = obs.count(WorkerState.BOOTING, WorkerState.DRAINING)
    if in_flight and capacity >= cfg.min_workers:
        blocked = Condition.SCALING_IN_PROGRESS
        reason = f"{reason}; waiting for {in_flight} booting/draining worker(s)"
    elif target > capacity:
        spawn = min(target - capacity, free)
        if spawn < target - capacity:
            blocked = Condition.INSUFFICIENT_RESOURCES
            reason = (
                f"{reason}; the budget (ELASTICITY_BUDGET) has room for {spawn} "
                f"of {target - capacity} more"
            )
    elif target < capacity:
        idle = obs.count(WorkerState.IDLE)
        retire = min(capacity - target, idle)  # target >= min_workers, so min holds
        if retire < capacity - target:
            blocked = Condition.NO_IDLE_WORKERS if idle == 0 else None
            reason = f"{reason}; only {idle} idle worker(s) may be retired"
    return Decision(
        profile=obs.profile,
        at=now,
        backlog=obs.backlog,
        action_seconds=plan.action_seconds,
        capacity=capacity,
        raw=plan.raw,
        stabilized=plan.stabilized,
        allotted=share,
        target=target,
        spawn=spawn,
        retire=retire,
        reason=reason,
        blocked_by=blocked,
    )


def decide(
    observations: Sequence[Observation],
    memories: Mapping[str, ProfileMemory],
    configs: Mapping[str, ProfileConfig],
    budget: int,
    now: float,
) -> list[Decision]:
    """One evaluation over all profiles (the budget couples them): plan each profile
    (steps 1-4), share the budget max-min fairly over the plans, then decide each profile
    within its share and what is left of the budget (steps 5-6), in profile order."""
    plans = {
        o.profile: plan_profile(o, memories[o.profile], configs[o.profile], now)
        for o in observations
    }
    shares = allot(
        {p: plan.stabilized for p, plan in plans.items()},
        {p: configs[p].min_workers for p in plans},
        budget,
    )
    free = max(0, budget - occupied(observations))
    decisions = []
    for o in observations:
        decision = decide_profile(
            o, configs[o.profile], plans[o.profile], shares[o.profile], free, now
        )
        free -= decision.spawn
        decisions.append(decision)
    return decisions


def slackers(workers: Sequence[WorkerView], now: float, threshold: float) -> list[WorkerView]:
    """Workers spawned more than ``threshold`` seconds ago that never registered."""
    return [w for w in workers if w.state is WorkerState.BOOTING and now - w.since > threshold]


def retire_order(workers: Sequence[WorkerView]) -> list[WorkerView]:
    """Idle workers, longest idle first: the ones to retire."""
    return sorted((w for w in workers if w.state is WorkerState.IDLE), key=lambda w: w.since)


def classify(
    profile: str,
    spawned: Mapping[str, float],
    nodes: Mapping[str, NodeInfo],
    draining: Mapping[str, float],
    exited: set[str],
    now: float,
    heartbeat_timeout: float,
    judge_heartbeats: bool = True,
) -> list[WorkerView]:
    """The state of each worker we spawned (name -> spawn time) for ``profile``.
    Stale heartbeats make a worker lost only if ``judge_heartbeats``: while our own event
    stream is down, or back for less than a heartbeat timeout, silence proves nothing,
    and a worker keeps the state it was last seen in."""
    views = []
    for name, at in spawned.items():
        node = nodes.get(name)
        if name in draining:
            state, since = WorkerState.DRAINING, draining[name]
        elif name in exited:
            state, since = WorkerState.LOST, now
        elif node is None:
            state, since = WorkerState.BOOTING, at
        elif node.offline or (judge_heartbeats and now - node.last_seen > heartbeat_timeout):
            state, since = WorkerState.LOST, node.last_seen
        elif node.active > 0:
            state, since = WorkerState.BUSY, node.last_seen
        else:
            state, since = WorkerState.IDLE, node.idle_since
        views.append(WorkerView(name, profile, state, since))
    return views
