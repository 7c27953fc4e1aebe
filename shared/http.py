"""The operations endpoints every Carousel HTTP service serves, written once:
``GET /healthz`` (the process answers), ``GET /readyz`` (it can do its job) and
``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest

#: None when ready, else the reason it is not (sync or async)
ReadinessCheck = Callable[[], str | None] | Callable[[], Awaitable[str | None]]
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def ops_router(
    ready: ReadinessCheck,
    registry: CollectorRegistry,
    refresh: Callable[[], None] | None = None,
) -> APIRouter:
    """The three routes. ``refresh`` sets the registry's gauges just before a scrape.
    Sync callables run in the thread pool: they may take a service's lock."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        if inspect.iscoroutinefunction(ready):
            reason = await ready()
        else:
            reason = await run_in_threadpool(ready)
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": reason}, 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        if refresh is not None:
            await run_in_threadpool(refresh)
        return Response(generate_latest(registry), media_type=PROMETHEUS_TEXT)

    return router
