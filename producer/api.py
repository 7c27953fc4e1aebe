"""The producer's REST API (the contract is in docs/design.md): the app, its lifespan,
and the routes, grouped by what they serve."""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse

from producer.deps import Auth, AuthorizedRoute, Service
from producer.errors import (
    BrokerUnavailable,
    Unroutable,
    VmBeingRemoved,
    VmHasUnfinishedEvents,
)
from producer.metrics import ProducerMetrics
from producer.monitoring.service import Monitor
from producer.publisher import Publisher
from producer.schemas import (
    AcceptedOut,
    AvailabilityIn,
    CancelRefused,
    EventBatchIn,
    EventOut,
    EventsIn,
    MappingOut,
)
from producer.service import EventService
from producer.settings import ProducerSettings
from producer.waiting import DispatcherClient
from shared.db import LEDGER_TROUBLE
from shared.docs import service_app
from shared.errors import Conflict
from shared.http import (
    TOO_LARGE,
    UNAUTHORIZED,
    UNDECODABLE,
    Responses,
    ops_router,
    refused,
    unavailable,
)
from shared.models import Status
from shared.names import Name
from shared.store import Store
from shared.topology import Topology

log = logging.getLogger(__name__)


def app_factory() -> FastAPI:
    """The app of one producer process, its settings read from the environment (each of
    PRODUCER_PROCESSES worker processes calls this)."""
    from producer.main import configure_logging

    settings = ProducerSettings()
    configure_logging(settings)
    return create_app(settings)


def create_app(settings: ProducerSettings) -> FastAPI:
    metrics = ProducerMetrics()
    # max_body_size: 413 for larger bodies, chunked ones included (Starlette counts), on
    # every route: documented on all of them (``responses``)
    app = service_app(
        title="Carousel producer",
        version="0.1.0",
        lifespan=_lifespan(settings, metrics),
        max_body_size=settings.max_body_bytes,
        responses=TOO_LARGE,
    )
    app.include_router(events_router(metrics))
    app.include_router(mapping_router(settings.topology))
    app.include_router(monitor_router())
    app.include_router(root_router(settings.dispatcher_url))
    for trouble in LEDGER_TROUBLE:
        app.add_exception_handler(trouble, _ledger_unavailable(metrics))

    async def ready() -> str | None:
        try:
            await app.state.service.publisher.start()
        except BrokerUnavailable as exc:
            return f"broker unreachable: {exc}"
        return None

    app.include_router(ops_router(ready, metrics.registry))
    return app


#: what the OpenAPI documents of each refusal (docs/design.md §4 is the contract); the
#: 413 of a body over MAX_BODY_BYTES is the app's, on every route
REFUSED: Responses = {
    **UNAUTHORIZED,
    **unavailable("Broker or ledger unavailable; retry with the same ids"),
}
NOT_FOUND = refused(404, "Unknown")

RETRY_AFTER = {"Retry-After": "1"}


def _ledger_unavailable(
    metrics: ProducerMetrics,
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """503 with ``Retry-After``, never a 500: nothing was accepted that a retry with the
    same ids would not accept once (an event whose confirm could not be recorded is in
    its queue; the retry finds it and does not store it twice)."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        metrics.rejected.labels("ledger").inc()
        log.warning("ledger unavailable during %s %s: %r", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": f"the ledger is unavailable: {exc.__class__.__name__}"},
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers=RETRY_AFTER,
        )

    return handler


def _lifespan(
    settings: ProducerSettings, metrics: ProducerMetrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await asyncio.to_thread(
            Store.connect, settings.carousel_db_url, True, settings.db_pool
        )
        publisher = Publisher(settings.amqp_url, settings.topology, settings.publish_timeout)
        try:
            await publisher.start()
        except BrokerUnavailable:
            log.warning("broker not reachable at start; /readyz will say so until it is")
        dispatcher = None
        if settings.dispatcher_url:
            dispatcher = DispatcherClient(
                settings.dispatcher_url, settings.dispatcher_timeout, settings.carousel_api_token
            )
        service = EventService(store, publisher, settings.coalescing_policies, dispatcher)
        app.state.service = service
        app.state.settings = settings
        app.state.metrics = metrics
        monitor = None
        if settings.monitor_source:  # a bad policies file stops the start here, named
            monitor = Monitor.build(settings, service, metrics.registry)
            service.group_of = monitor.group_of
            monitor.start()
        app.state.monitor = monitor
        yield
        if monitor is not None:
            await monitor.stop()
        await publisher.close()
        store.engine.dispose()

    return lifespan


def events_router(metrics: ProducerMetrics) -> APIRouter:
    """``POST /events``, ``GET /events/{id}`` and ``DELETE /events/{id}`` (cancel)."""
    router = APIRouter(tags=["events"], route_class=AuthorizedRoute, responses=REFUSED)

    @router.post(
        "/events",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=AcceptedOut,
        responses={
            **UNDECODABLE,
            **refused(409, "An id re-posted with other content, or the VM is being removed"),
        },
    )
    async def post_events(
        _: Auth,
        svc: Service,
        body: Annotated[
            EventsIn,
            Body(description='One event, or {"events": [...]} with 1-1000 events.'),
        ],
    ) -> AcceptedOut:
        started = time.perf_counter()
        events = body.events if isinstance(body, EventBatchIn) else [body]
        try:
            answer = await svc.accept(events)
        except (Conflict, VmBeingRemoved) as exc:
            metrics.rejected.labels("conflict").inc()
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        except (BrokerUnavailable, Unroutable) as exc:
            metrics.rejected.labels("broker").inc()
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers=RETRY_AFTER
            ) from exc
        metrics.accepted.inc(len(answer.ids))
        metrics.coalesced.inc(sum(answer.coalesced))
        metrics.accept_seconds.observe(time.perf_counter() - started)
        return AcceptedOut(ids=answer.ids, coalesced=answer.coalesced)

    @router.get("/events/{event_id}", response_model=EventOut, responses=NOT_FOUND)
    async def get_event(_: Auth, svc: Service, event_id: str) -> Any:
        """The event; while it is queued, ``waiting`` says what holds it."""
        row = await svc.view(event_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
        return row

    @router.delete(
        "/events/{event_id}",
        response_model=EventOut,
        responses={
            **NOT_FOUND,
            409: {
                "model": CancelRefused,
                "description": "Dispatched already: not cancelled, nothing changed",
            },
        },
    )
    async def cancel_event(_: Auth, svc: Service, event_id: str) -> Any:
        """Cancel an event not yet dispatched: it ends ``cancelled`` and never runs;
        again for a cancelled one. Decided by the ledger alone (no dispatcher needed)."""
        got = await asyncio.to_thread(svc.store.cancel, event_id)
        if got.status is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
        if got.status is not Status.CANCELLED:
            refused = CancelRefused(
                detail=f"event {event_id!r} is {got.status.value}: only an event not yet "
                "dispatched can be cancelled",
                id=event_id,
                status=got.status.value,
            )
            return JSONResponse(refused.model_dump(), status.HTTP_409_CONFLICT)
        if got.now:
            metrics.cancelled.inc()
            log.info("event %s cancelled", event_id, extra={"event_id": event_id})
        return await asyncio.to_thread(svc.store.get, event_id)

    return router


def mapping_router(topology: Topology) -> APIRouter:
    """The mapping: read it, set availability, remove a VM."""
    router = APIRouter(tags=["mapping"], route_class=AuthorizedRoute, responses=REFUSED)

    @router.get("/mapping", response_model=MappingOut)
    async def get_mapping(_: Auth, svc: Service) -> MappingOut:
        return MappingOut.of(await asyncio.to_thread(svc.store.snapshot), topology)

    @router.put("/hosts/{host}/availability", responses={**UNDECODABLE, **NOT_FOUND})
    async def put_host_availability(
        _: Auth, svc: Service, host: Name, body: AvailabilityIn
    ) -> dict[str, Any]:
        if not await svc.set_host_available(host, body.available):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no host {host!r}")
        return {"host": host, "available": body.available}

    @router.put("/hosts/{host}/vms/{vm}/availability", responses={**UNDECODABLE, **NOT_FOUND})
    async def put_vm_availability(
        _: Auth, svc: Service, host: Name, vm: Name, body: AvailabilityIn
    ) -> dict[str, Any]:
        if not await svc.set_vm_available(host, vm, body.available):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no VM {vm!r} on host {host!r}")
        return {"host": host, "vm": vm, "available": body.available}

    @router.delete(
        "/hosts/{host}/vms/{vm}",
        responses={
            **NOT_FOUND,
            **refused(409, "The VM has unfinished events, or is being removed"),
        },
    )
    async def delete_vm(_: Auth, svc: Service, host: Name, vm: Name) -> dict[str, Any]:
        try:
            removed = await svc.remove_vm(host, vm)
        except (VmHasUnfinishedEvents, VmBeingRemoved) as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        if not removed:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no VM {vm!r} on host {host!r}")
        return {"host": host, "vm": vm, "removed": True}

    return router


def root_router(dispatcher_url: str) -> APIRouter:
    """``GET /``: where a person goes from here (no token: it shows nothing else)."""
    router = APIRouter()
    port = urlsplit(dispatcher_url).port or 8001

    @router.get("/", include_in_schema=False)
    async def root(request: Request) -> HTMLResponse:
        # the dispatcher's port on the host the browser used: right under `make up` and
        # under compose (which publishes each port as is)
        live = f"{request.url.scheme}://{request.url.hostname}:{port}/live"
        return HTMLResponse(ROOT_PAGE.format(live=html.escape(live)))

    return router


ROOT_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Carousel producer</title><link rel="icon" href="data:,"></head>
<body style="font-family: system-ui, sans-serif; margin: 2rem">
<h1>Carousel producer</h1>
<ul>
<li><a href="{live}">The live page</a>: hosts, VMs and policies as they drain, the limits,
the worker pool, dead letters (served by the dispatcher)</li>
<li><a href="/docs">The API reference</a> (<a href="/redoc">ReDoc</a>,
<a href="/openapi.json">OpenAPI</a>): post events at <code>POST /events</code></li>
</ul></body></html>
"""


def monitor_router() -> APIRouter:
    """``GET /monitor/status``: each monitored source's last list, stream and lag."""
    router = APIRouter(tags=["monitoring"], route_class=AuthorizedRoute, responses=REFUSED)

    @router.get("/monitor/status")
    async def monitor_status(_: Auth, request: Request) -> dict[str, Any]:
        monitor: Monitor | None = request.app.state.monitor
        if monitor is None:
            return {"enabled": False, "running": False, "sources": []}
        return monitor.status()

    return router
