"""What every Carousel HTTP service shares, written once: the operations endpoints
``GET /healthz`` (the process answers), ``GET /readyz`` (it can do its job) and
``GET /metrics`` (Prometheus text format), the bearer-token check, a route class
that makes it before the body is read, and the OpenAPI documentation of the refusals
the services share (401, 400, 413, 503)."""

from __future__ import annotations

import inspect
import ipaddress
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
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


#: an operation's documented answers besides the 2xx and 422 FastAPI documents itself
Responses = dict[int | str, dict[str, Any]]


def refused(code: int, description: str, headers: dict[str, Any] | None = None) -> Responses:
    """The documentation of a refusal ``code`` whose body is a :class:`Refusal`, with
    the ``headers`` it always carries (OpenAPI header objects)."""
    doc: dict[str, Any] = {"model": Refusal, "description": description}
    if headers:
        doc["headers"] = headers
    return {code: doc}


def unavailable(description: str) -> Responses:
    """A 503 that says when to try again (``Retry-After``, in seconds)."""
    retry_after = {"description": "Seconds to wait before retrying", "required": True}
    schema = {"type": "integer", "minimum": 0}
    return refused(503, description, {"Retry-After": {**retry_after, "schema": schema}})


#: the documentation of a route's answer when the ledger fails (:func:`ledger_down`)
LEDGER_DOWN = unavailable("The ledger is unavailable; retry")
#: seconds an admin API's client is told to wait when the ledger fails
LEDGER_RETRY_AFTER = 5


def ledger_down(exc: Exception) -> HTTPException:
    """The 503 (with ``Retry-After``), never a 500, of a route whose ledger failed
    (locked, out of reach): it names the error's kind only."""
    return HTTPException(
        503,
        f"the ledger is unavailable: {exc.__class__.__name__}",
        headers={"Retry-After": str(LEDGER_RETRY_AFTER)},
    )


#: :func:`verify_bearer`'s refusal, on every route a token may guard
UNAUTHORIZED = refused(
    401,
    "Missing or wrong bearer token",
    {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "pattern": "^Bearer"}}},
)
#: a body FastAPI cannot decode (not UTF-8); malformed JSON is a 422 (``json_invalid``)
UNDECODABLE = refused(400, "The body cannot be decoded (not UTF-8)")
#: Starlette's answer, on every route of an app with a ``max_body_size``, to a body over
#: it (or a ``Content-Length`` over it, even where the route reads no body): plain text
TOO_LARGE: Responses = {
    413: {
        "description": "The body is larger than the service accepts",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


class Readiness(BaseModel):
    """``/readyz``'s body: ``ready``, or why not."""

    status: str


def is_loopback(host: str) -> bool:
    """Whether a server listening on ``host`` is reachable from this machine only:
    ``localhost`` or a loopback address (127.0.0.0/8, ``::1``). Any other name counts as
    reachable from elsewhere (it may resolve to any interface), as does ``""`` (all)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


#: arrays and objects nested deeper than this in a JSON body are refused before it is
#: parsed (422, ``json_invalid``): the standard parser takes nesting up to the
#: interpreter's recursion limit, and what handles the parsed body after it — validation,
#: the rendering of a 422 that echoes the input, a payload's size — recursed too and ran
#: out of stack (500); pydantic reads and writes JSON only 200 and 255 levels deep
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_A_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPENING = frozenset(b"[{")


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects in ``body`` (its strings left out) nest deeper than
    ``limit``. Whatever ``body`` is: one that is not JSON is refused by the parser."""
    depth = 0
    for c in _JSON_STRING.sub(b"", body).translate(None, _NOT_A_BRACKET):
        depth += 1 if c in _OPENING else -1
        if depth > limit:
            return True
    return False


def token_first(check: TokenCheck) -> type[APIRoute]:
    """A route class that runs ``check`` before FastAPI reads the body, so that a caller
    without the token gets 401 whatever it sent, not a 400 or 422 about a body it may
    not send (a token dependency alone runs only after the body is parsed); then, for a
    route that reads a body, refuses one nested deeper than :data:`MAX_JSON_DEPTH`."""

    class TokenFirstRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()
            reads_a_body = self.body_field is not None

            async def checked(request: Request) -> Response:
                check(request, await bearer(request))
                if reads_a_body and too_deep(await request.body()):
                    raise RequestValidationError(
                        [
                            {
                                "type": "json_invalid",
                                "loc": ("body",),
                                "msg": f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
                                "input": {},
                            }
                        ]
                    )
                return await handle(request)

            return checked

    return TokenFirstRoute


def guarded_router(expected: str, **options: Any) -> APIRouter:
    """A router whose every route needs ``expected`` as bearer token (none if empty),
    checked before the body is read. Its OpenAPI declares the bearer scheme (``/docs``
    can send the token) and the 401, whether or not a token is configured, as the
    producer's does; a route that reads a body adds :data:`UNDECODABLE` itself."""
    return APIRouter(
        route_class=token_first(lambda _request, creds: verify_bearer(expected, creds)),
        dependencies=[Depends(bearer)],  # documents the scheme; token_first checks it
        responses=UNAUTHORIZED,
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
