"""The elasticity worker's admin API (port 8002): /status explains every decision and
/history draws each pool against its backlog over the last hour (both need
``CAROUSEL_API_TOKEN`` unless ``ADMIN_VIEWS_OPEN``, the default); the operations routes
(/healthz, /readyz, /metrics) are :func:`shared.http.ops_router`'s."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Query
from prometheus_client import CollectorRegistry, Gauge

from scheduler.elasticity.engine import Engine
from scheduler.elasticity.history import Sample
from scheduler.elasticity.model import ProfileConfig, WorkerState
from shared.docs import service_app
from shared.http import guarded_router, ops_router

Status = Callable[[], dict[str, Any]]


def create_admin_app(engine: Engine, dry_run: bool, views_token: str = "") -> FastAPI:
    app = service_app(title="Carousel elasticity", version="0.1.0")

    def status() -> dict[str, Any]:
        with engine.lock:
            profiles = {name: profile_status(engine, name) for name in engine.configs}
            return {
                "ready": engine.ready(),
                "dry_run": dry_run,
                "budget": engine.budget,
                "profiles": profiles,
            }

    def ready() -> str | None:
        return None if engine.ready() else "below the minimum of workers"

    views = guarded_router(views_token)

    @views.get("/status")
    def get_status() -> dict[str, Any]:
        return status()

    @views.get("/history")
    def get_history(
        seconds: int = Query(
            engine.history.window,
            ge=1,
            le=engine.history.window,
            description="How far back, in seconds (at most the window the history keeps)",
        ),
    ) -> dict[str, Any]:
        with engine.lock:
            return history(engine, seconds)

    app.include_router(views)
    registry, refresh = _metrics(status)
    app.include_router(ops_router(ready, registry, refresh))
    return app


def profile_status(engine: Engine, name: str) -> dict[str, Any]:
    """One profile in /status: its config, its workers, its last decisions and events.
    The caller holds ``engine.lock``."""
    cfg = engine.configs[name]
    views = engine.workers(name)
    last = engine.last.get(name)
    seen = next((o for d, o in reversed(engine.decisions) if d is last), None)
    return {
        "config": _config(cfg),
        "workers": [
            {
                "name": w.name,
                "state": w.state.value,
                "since": w.since,
                "pid": engine.handles[w.name].pid,
            }
            for w in views
        ],
        # counts, backlog and desired: one instant, the last decision's observation
        # (`observed_at`); `workers` above is the live list
        "counts": {
            s.value: seen.count(s) if seen else sum(w.state is s for w in views)
            for s in WorkerState
        },
        "observed_at": last.at if last else None,
        "backlog": last.backlog if last else None,
        "desired": last.target if last else None,
        "decisions": [
            {
                **asdict(d),
                "workers": {s.value: o.count(s) for s in WorkerState},
                "mean_action_seconds": o.mean_action_seconds,
            }
            for d, o in list(engine.decisions)[-20:]
            if d.profile == name
        ],
        "events": [asdict(e) for e in list(engine.events)[-50:] if e.profile == name],
    }


def history(engine: Engine, seconds: int) -> dict[str, Any]:
    """/history: each profile's samples of the last ``seconds``, oldest first, one per
    step at most (:mod:`scheduler.elasticity.history`). The caller holds ``engine.lock``."""
    since = engine.clock() - seconds
    return {
        "window_seconds": engine.history.window,
        "step_seconds": engine.history.step,
        "profiles": {
            name: {"samples": [_sample(s) for s in engine.history.samples(name, since)]}
            for name in engine.configs
        },
    }


def _sample(sample: Sample) -> dict[str, Any]:
    return {
        "at": sample.at,
        "workers": {s.value: n for s, n in sample.workers.items()},
        "backlog": sample.backlog,
        "desired": sample.desired,
    }


def _config(cfg: ProfileConfig) -> dict[str, Any]:
    """The profile's config, its name first (as /status has always shown it)."""
    return {"name": cfg.name, **cfg.model_dump(exclude={"name"})}


def _metrics(status: Status) -> tuple[CollectorRegistry, Callable[[], None]]:
    """A registry of the elasticity gauges, and the refresh that sets them from
    ``status()`` before a scrape."""
    registry = CollectorRegistry()
    desired = Gauge(
        "carousel_desired_workers",
        "Workers each profile should have (for KEDA/HPA when a cluster scales the workers)",
        ["profile"],
        registry=registry,
    )
    workers = Gauge("carousel_workers", "Workers by state", ["profile", "state"], registry=registry)
    backlog = Gauge(
        "carousel_backlog", "Work waiting or running per profile", ["profile"], registry=registry
    )

    def refresh() -> None:
        for name, profile in status()["profiles"].items():
            if profile["desired"] is not None:
                desired.labels(name).set(profile["desired"])
                backlog.labels(name).set(profile["backlog"])
            live = [w["state"] for w in profile["workers"]]  # now, not at the decision
            for state in WorkerState:
                workers.labels(name, state.value).set(live.count(state.value))

    return registry, refresh
