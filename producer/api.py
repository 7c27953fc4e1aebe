"""The producer's REST API (see DESIGN.md, "REST contract")."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest

from producer.deps import Auth, Service
from producer.errors import BrokerUnavailable, Unroutable
from producer.metrics import ProducerMetrics
from producer.publisher import Publisher
from producer.schemas import (
    AcceptedOut,
    AvailabilityIn,
    EventBatchIn,
    EventOut,
    VmEventIn,
)
from producer.service import EventService, VmBeingRemoved, VmHasPendingEvents
from producer.settings import ProducerSettings
from shared.models import MappingSnapshot, Status
from shared.names import Name
from shared.store import Conflict, Store

log = logging.getLogger(__name__)


def create_app(settings: ProducerSettings) -> FastAPI:
    metrics = ProducerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await asyncio.to_thread(Store.connect, settings.carousel_db_url, settings.topology)
        publisher = Publisher(settings.amqp_url, settings.topology, settings.publish_timeout)
        try:
            await publisher.start()
        except BrokerUnavailable:
            log.warning("broker not reachable at start; /readyz will say so until it is")
        app.state.service = EventService(store, publisher)
        app.state.settings = settings
        app.state.metrics = metrics
        yield
        await publisher.close()
        store.engine.dispose()

    # max_body_size: 413 for larger bodies, chunked ones included (Starlette counts)
    app = FastAPI(
        title="Carousel producer",
        version="0.1.0",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )

    @app.post("/events", status_code=status.HTTP_202_ACCEPTED, response_model=AcceptedOut)
    async def post_events(
        _: Auth,
        svc: Service,
        body: Annotated[
            VmEventIn | EventBatchIn,
            Body(description='One event, or {"events": [...]} with 1-1000 events.'),
        ],
    ) -> AcceptedOut:
        started = time.perf_counter()
        events = body.events if isinstance(body, EventBatchIn) else [body]
        try:
            ids = await svc.accept(events)
        except (Conflict, VmBeingRemoved) as exc:
            metrics.rejected.labels("conflict").inc()
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        except (BrokerUnavailable, Unroutable) as exc:
            metrics.rejected.labels("broker").inc()
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
        metrics.accepted.inc(len(ids))
        metrics.accept_seconds.observe(time.perf_counter() - started)
        return AcceptedOut(ids=ids)

    @app.get("/events/{event_id}", response_model=EventOut)
    async def get_event(_: Auth, svc: Service, event_id: str) -> Any:
        row = await asyncio.to_thread(svc.store.get, event_id)
        if row is None or row["status"] == Status.PENDING:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
        return row

    @app.get("/mapping", response_model=MappingSnapshot)
    async def get_mapping(_: Auth, svc: Service) -> MappingSnapshot:
        return await asyncio.to_thread(svc.store.snapshot)

    @app.put("/hosts/{host}/availability")
    async def put_host_availability(
        _: Auth, svc: Service, host: Name, body: AvailabilityIn
    ) -> dict[str, Any]:
        if not await svc.set_host_available(host, body.available):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no host {host!r}")
        return {"host": host, "available": body.available}

    @app.put("/hosts/{host}/vms/{vm}/availability")
    async def put_vm_availability(
        _: Auth, svc: Service, host: Name, vm: Name, body: AvailabilityIn
    ) -> dict[str, Any]:
        if not await svc.set_vm_available(host, vm, body.available):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no VM {vm!r} on host {host!r}")
        return {"host": host, "vm": vm, "available": body.available}

    @app.delete("/hosts/{host}/vms/{vm}")
    async def delete_vm(_: Auth, svc: Service, host: Name, vm: Name) -> dict[str, Any]:
        try:
            removed = await svc.remove_vm(host, vm)
        except (VmHasPendingEvents, VmBeingRemoved) as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        if not removed:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no VM {vm!r} on host {host!r}")
        return {"host": host, "vm": vm, "removed": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(svc: Service) -> JSONResponse:
        try:
            await svc.publisher.start()
        except BrokerUnavailable as exc:
            return JSONResponse({"status": "broker unreachable", "detail": str(exc)}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def get_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    return app
