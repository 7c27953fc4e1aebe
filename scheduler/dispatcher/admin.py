"""The scheduler's admin API (port 8001): the dispatcher's views and controls, and the
operations routes (/healthz, /readyz, /metrics) of :func:`shared.http.ops_router`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Query
from prometheus_client import CollectorRegistry, Gauge
from pydantic import BaseModel, ConfigDict, Field

from scheduler.dispatcher.state import DispatcherState
from shared.http import ops_router

Stats = Callable[[], dict[str, Any]]

#: the gauges of /metrics, each set from the /stats field of its name
GAUGES = [
    ("in_flight", "Actions in flight"),
    ("held", "Heads held"),
    ("ready_keys", "Keys with a held head"),
    ("dispatched_total", "Dispatches since start"),
    ("completed_total", "Completions since start"),
    ("paused", "1 if paused"),
]


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_parallel: int | None = Field(None, ge=1)
    per_vm: int | None = Field(None, ge=1)
    per_host: int | None = Field(None, ge=0, description="0 = no per-host limit")


def create_admin_app(
    state: DispatcherState[Any],
    connected: threading.Event,
    mapping_version: Callable[[], int],
) -> FastAPI:
    app = FastAPI(title="Carousel scheduler admin", version="0.1.0")

    def stats() -> dict[str, Any]:
        out = state.stats()
        out["connected"] = connected.is_set()
        out["mapping_version"] = mapping_version()
        return out

    def ready() -> str | None:
        return None if connected.is_set() else "not connected to the broker"

    registry, refresh = _metrics(stats)
    app.include_router(dispatcher_router(state, stats))
    app.include_router(ops_router(ready, registry, refresh))
    return app


def dispatcher_router(state: DispatcherState[Any], stats: Stats) -> APIRouter:
    """/stats, /pause, /resume, /limits and /dispatches over the dispatcher."""
    router = APIRouter()

    @router.get("/stats")
    def get_stats() -> dict[str, Any]:
        return stats()

    @router.post("/pause")
    def pause() -> dict[str, Any]:
        state.pause()
        return {"paused": True}

    @router.post("/resume")
    def resume() -> dict[str, Any]:
        state.resume()
        return {"paused": False}

    @router.put("/limits")
    def put_limits(body: LimitsIn) -> dict[str, Any]:
        return state.set_limits(body.model_dump(exclude_none=True))

    @router.get("/dispatches")
    def get_dispatches(limit: int = Query(100, ge=1, le=10000)) -> list[dict[str, Any]]:
        return state.recent_dispatches(limit)

    return router


def _metrics(stats: Stats) -> tuple[CollectorRegistry, Callable[[], None]]:
    """A registry of the scheduler's gauges, and the refresh that sets them from
    ``stats()`` before a scrape."""
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(f"carousel_scheduler_{name}", help_, registry=registry)
        for name, help_ in GAUGES
    }

    def refresh() -> None:
        current = stats()
        for name, gauge in gauges.items():
            gauge.set(float(current[name]))

    return registry, refresh
