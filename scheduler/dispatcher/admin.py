"""The scheduler's admin API (port 8001)."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from scheduler.dispatcher.dispatcher import Dispatcher


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_parallel: int | None = Field(None, ge=1)
    per_vm: int | None = Field(None, ge=1)
    per_host: int | None = Field(None, ge=0, description="0 = no per-host limit")


def create_admin_app(
    dispatcher: Dispatcher[Any],
    lock: threading.Lock,
    connected: threading.Event,
    mapping_version: Any,
) -> FastAPI:
    app = FastAPI(title="Carousel scheduler admin", version="0.1.0")
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(f"carousel_scheduler_{name}", help_, registry=registry)
        for name, help_ in [
            ("in_flight", "Actions in flight"),
            ("held", "Heads held"),
            ("ready_keys", "Keys with a held head"),
            ("dispatched_total", "Dispatches since start"),
            ("completed_total", "Completions since start"),
            ("paused", "1 if paused"),
        ]
    }

    def stats() -> dict[str, Any]:
        with lock:
            out = dispatcher.stats()
        out["connected"] = connected.is_set()
        out["mapping_version"] = mapping_version()
        return out

    @app.get("/stats")
    def get_stats() -> dict[str, Any]:
        return stats()

    @app.post("/pause")
    def pause() -> dict[str, Any]:
        with lock:
            dispatcher.paused = True
        return {"paused": True}

    @app.post("/resume")
    def resume() -> dict[str, Any]:
        with lock:
            dispatcher.paused = False
        return {"paused": False}

    @app.put("/limits")
    def put_limits(body: LimitsIn) -> dict[str, Any]:
        changes = body.model_dump(exclude_none=True)
        with lock:
            dispatcher.set_limits(replace(dispatcher.limits, **changes))
            return dict(vars(dispatcher.limits))

    @app.get("/dispatches")
    def get_dispatches(limit: int = Query(100, ge=1, le=10000)) -> list[dict[str, Any]]:
        with lock:
            return dispatcher.recent_dispatches(limit)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        if connected.is_set():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not connected to the broker"}, 503)

    @app.get("/metrics")
    def metrics() -> Response:
        current = stats()
        for name, gauge in gauges.items():
            gauge.set(float(current[name]))
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return app
