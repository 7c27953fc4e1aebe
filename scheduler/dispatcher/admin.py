"""The scheduler's admin API (port 8001): the dispatcher's views and controls, and the
operations routes (/healthz, /readyz, /metrics) of :func:`shared.http.ops_router`. With
``CAROUSEL_API_TOKEN`` set, the controls (pause, resume, limits) need it; views stay
open."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Query
from prometheus_client import CollectorRegistry, Gauge
from pydantic import BaseModel, ConfigDict, Field

from scheduler.dispatcher.state import DispatcherState
from shared.http import ops_router, token_guard

Stats = Callable[[], dict[str, Any]]

#: the gauges of /metrics, each set from the /stats field of its name
GAUGES = [
    ("in_flight", "Actions in flight"),
    ("held", "Heads held"),
    ("ready_keys", "Keys with a held head"),
    ("dispatched_total", "Dispatches since start"),
    ("completed_total", "Completions since start"),
    ("paused", "1 if paused"),
    ("dead_lettered", "Messages moved to the dead-letter queue since start"),
]


class Session(Protocol):
    """What the admin API shows of the AMQP session (the loop is one)."""

    connected: threading.Event

    @property
    def mapping_version(self) -> int: ...

    @property
    def dead_lettered(self) -> int: ...

    @property
    def active(self) -> bool: ...


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_parallel: int | None = Field(None, ge=1)
    per_vm: int | None = Field(None, ge=1)
    per_host: int | None = Field(None, ge=0, description="0 = no per-host limit")


def create_admin_app(state: DispatcherState[Any], session: Session, token: str = "") -> FastAPI:
    app = FastAPI(title="Carousel scheduler admin", version="0.1.0")

    def stats() -> dict[str, Any]:
        out = state.stats()
        out["connected"] = session.connected.is_set()
        out["mapping_version"] = session.mapping_version
        out["dead_lettered"] = session.dead_lettered
        out["active"] = session.active
        return out

    def ready() -> str | None:
        if session.connected.is_set():
            return None
        if not session.active:
            return "standby: another scheduler holds the dispatcher lease"
        return "not connected to the broker"

    registry, refresh = _metrics(stats)
    app.include_router(dispatcher_router(state, stats, token))
    app.include_router(ops_router(ready, registry, refresh))
    return app


def dispatcher_router(state: DispatcherState[Any], stats: Stats, token: str) -> APIRouter:
    """/stats and /dispatches over the dispatcher, open; /pause, /resume and /limits
    behind the token."""
    router = APIRouter()
    guarded = [Depends(token_guard(token))]

    @router.get("/stats")
    def get_stats() -> dict[str, Any]:
        return stats()

    @router.post("/pause", dependencies=guarded)
    def pause() -> dict[str, Any]:
        state.pause()
        return {"paused": True}

    @router.post("/resume", dependencies=guarded)
    def resume() -> dict[str, Any]:
        state.resume()
        return {"paused": False}

    @router.put("/limits", dependencies=guarded)
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
