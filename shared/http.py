"""What every Carousel HTTP service shares, written once: the operations endpoints
``GET /healthz`` (the process answers), ``GET /readyz`` (it can do its job) and
``GET /metrics`` (Prometheus text format), and the bearer-token check."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import BaseModel

#: None when ready, else the reason it is not (sync or async)
ReadinessCheck = Callable[[], str | None] | Callable[[], Awaitable[str | None]]
PROMETHEUS_TEXT = "text/plain; version=0.0.4"

#: reads ``Authorization: Bearer <token>``; absent is None (the check answers 401)
bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class Readiness(BaseModel):
    """``/readyz``'s body: ``ready``, or why not."""

    status: str


def verify_bearer(expected: str, creds: HTTPAuthorizationCredentials | None) -> None:
    """401 unless ``creds`` carry ``expected`` (compared in constant time); no check at
    all when ``expected`` is empty (``CAROUSEL_API_TOKEN`` unset)."""
    if not expected:
        return
    if creds is None or not secrets.compare_digest(creds.credentials.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def token_guard(expected: str) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A route dependency that calls :func:`verify_bearer` with ``expected``."""

    def guard(creds: Credentials) -> None:
        verify_bearer(expected, creds)

    return guard


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

    @router.get(
        "/readyz",
        responses={
            200: {"model": Readiness, "description": "Ready"},
            503: {"model": Readiness, "description": "Not ready; `status` says why"},
        },
    )
    async def readyz() -> JSONResponse:
        if inspect.iscoroutinefunction(ready):
            reason = await ready()
        else:
            reason = await run_in_threadpool(ready)
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": reason}, 503)

    @router.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
                "description": "Prometheus text format",
            }
        },
    )
    async def metrics() -> Response:
        if refresh is not None:
            await run_in_threadpool(refresh)
        return Response(generate_latest(registry), media_type=PROMETHEUS_TEXT)

    return router
