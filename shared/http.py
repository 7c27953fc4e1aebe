"""What every Carousel HTTP service shares, written once: the operations endpoints
``GET /healthz`` (the process answers), ``GET /readyz`` (it can do its job) and
``GET /metrics`` (Prometheus text format), the bearer-token check, and a route class
that makes it before the body is read."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import BaseModel

#: None when ready, else the reason it is not (sync or async)
ReadinessCheck = Callable[[], str | None] | Callable[[], Awaitable[str | None]]
PROMETHEUS_TEXT = "text/plain; version=0.0.4"

#: reads ``Authorization: Bearer <token>``; absent is None (the check answers 401)
bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


#: checks a request's credentials; raises HTTPException (401) to refuse it
TokenCheck = Callable[[Request, HTTPAuthorizationCredentials | None], None]


class Refusal(BaseModel):
    """The body of a refusal other than a 422: what was wrong."""

    detail: str


#: the refusals a guarded route may answer, as its OpenAPI documents them
GUARDED_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Refusal, "description": "The body cannot be decoded"},
    401: {"model": Refusal, "description": "Missing or wrong bearer token"},
}


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


def token_first(check: TokenCheck) -> type[APIRoute]:
    """A route class that runs ``check`` before FastAPI reads the body, so that a caller
    without the token gets 401 whatever it sent, not a 400 or 422 about a body it may
    not send (a token dependency alone runs only after the body is parsed)."""

    class TokenFirstRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()

            async def checked(request: Request) -> Response:
                check(request, await bearer(request))
                return await handle(request)

            return checked

    return TokenFirstRoute


def guarded_router(expected: str, **options: Any) -> APIRouter:
    """A router whose every route needs ``expected`` as bearer token (none if empty),
    checked before the body is read, and documents the refusals."""
    return APIRouter(
        route_class=token_first(lambda _request, creds: verify_bearer(expected, creds)),
        responses=GUARDED_RESPONSES,
        **options,
    )


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
