"""The elasticity worker's admin API (port 8002): /status explains every decision."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from scheduler.elasticity.engine import Engine
from scheduler.elasticity.model import WorkerState


def create_admin_app(engine: Engine, dry_run: bool) -> FastAPI:
    app = FastAPI(title="Carousel elasticity", version="0.1.0")
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

    def status() -> dict[str, Any]:
        with engine.lock:
            profiles: dict[str, Any] = {}
            for name, cfg in engine.configs.items():
                views = engine.workers(name)
                last = engine.last.get(name)
                profiles[name] = {
                    "config": asdict(cfg),
                    "workers": [
                        {
                            "name": w.name,
                            "state": w.state.value,
                            "since": w.since,
                            "pid": engine.handles[w.name].pid,
                        }
                        for w in views
                    ],
                    "counts": {s.value: sum(w.state is s for w in views) for s in WorkerState},
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
            return {
                "ready": engine.ready(),
                "dry_run": dry_run,
                "budget": engine.budget,
                "profiles": profiles,
            }

    @app.get("/status")
    def get_status() -> dict[str, Any]:
        return status()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        if engine.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "below the minimum of workers"}, 503)

    @app.get("/metrics")
    def metrics() -> Response:
        for name, profile in status()["profiles"].items():
            if profile["desired"] is not None:
                desired.labels(name).set(profile["desired"])
                backlog.labels(name).set(profile["backlog"])
            for state, count in profile["counts"].items():
                workers.labels(name, state).set(count)
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return app
