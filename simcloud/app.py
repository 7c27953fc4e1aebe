"""simcloud's HTTP API over a :class:`~simcloud.model.Cloud`: the state (list and
long-poll watch), actions and their operations, faults, VMs added and removed, and the
Compute API subset under ``/compute``.

Everything runs on the server's one event loop, so the model needs no lock. Time moves
on a 50 ms timer and before every request (``Cloud.tick``); whenever the resource
version moved, waiting watchers are woken."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.docs import ASSETS_URL, service_app
from shared.http import UNAUTHORIZED, Responses, refused
from simcloud.actions import GROUP_ACTIONS
from simcloud.compute import compute_router
from simcloud.errors import CloudError, NotFound
from simcloud.model import Cloud
from simcloud.schemas import (
    ActionRequest,
    ApiFault,
    Fault,
    FlapFault,
    HostFault,
    NewVm,
    StreamCut,
    UtilisationFault,
    VmFault,
)

log = logging.getLogger("simcloud")

TICK_SECONDS = 0.05
MAX_WATCH_SECONDS = 60.0
MAX_WATCH_CHANGES = 5000
#: open without the token: the health check and the API docs (the page and its assets)
OPEN_PATHS = frozenset({"/healthz", "/docs", "/redoc", "/openapi.json"})
FAULT_FREE_PATHS = frozenset({"/healthz", "/v1/faults"})

#: what the gate refuses on every path but /healthz: the token, and an injected API fault
#: (and the watch a cut stream)
GATED: Responses = {**UNAUTHORIZED, **refused(503, "An injected API fault, or the stream is cut")}


class Unprocessable(BaseModel):
    """A 422: FastAPI's list of validation errors, or the cloud's one message."""

    detail: list[dict[str, Any]] | str


#: what the cloud refuses (:class:`~simcloud.errors.CloudError`), on the routes that act
CLOUD_REFUSALS: Responses = {
    **refused(400, "Refused by the cloud, or a body that cannot be decoded"),
    **refused(404, "No such VM, host, group or operation"),
    **refused(409, "Clashes with the cloud's state"),
    422: {"model": Unprocessable, "description": "Invalid request"},
}


class Hub:
    """Moves the cloud's time on and wakes the watchers when something changed."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self._seen = cloud.resource_version
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the server is shutting down: watchers answer at once instead of waiting
        self.stopping = False

    def stop(self) -> None:
        """End every pending watch now (safe from a signal handler or another thread)."""
        self.stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.wake)

    def settle(self) -> None:
        self.cloud.tick()
        if self.cloud.resource_version != self._seen:
            self._seen = self.cloud.resource_version
            self.wake()

    def wake(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    def changed(self) -> asyncio.Event:
        """Set at the next wake-up (fetch it before checking, then wait on it)."""
        loop = asyncio.get_running_loop()
        if self._event is None or self._loop is not loop:
            self._event, self._loop = asyncio.Event(), loop
        return self._event

    async def run(self) -> None:
        while True:
            try:
                self.settle()
            except Exception:  # a bug in one effect must not stop time
                log.exception("tick failed")
            await asyncio.sleep(TICK_SECONDS)


class Gate:
    """Bearer auth (every path but /healthz and the docs; the Compute API also takes the token as
    ``X-Auth-Token``, as OpenStack clients send it), then the injected API fault
    (every path but /healthz and /v1/faults); time is settled around each request."""

    def __init__(self, app: ASGIApp, hub: Hub, token: str) -> None:
        self.app, self.hub, self.token = app, hub, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.token and not _open(path) and not self._authorized(scope):
            reply = JSONResponse({"detail": "unauthorized"}, 401, {"www-authenticate": "Bearer"})
            await reply(scope, receive, send)
            return
        self.hub.settle()
        if path not in FAULT_FREE_PATHS:
            delay, fail = self.hub.cloud.api_fault_check()
            if delay:
                await asyncio.sleep(delay)
            if fail:
                await JSONResponse({"detail": "injected API fault"}, 503)(scope, receive, send)
                return
        await self.app(scope, receive, send)
        self.hub.settle()

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"").decode("latin-1")
        if given.startswith("Bearer ") and _same(given[7:], self.token):
            return True
        auth_token = headers.get(b"x-auth-token", b"").decode("latin-1")
        path: str = scope["path"]
        return path.startswith("/compute") and _same(auth_token, self.token)


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(f"{ASSETS_URL}/")


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def create_app(cloud: Cloud, token: str = "") -> FastAPI:
    hub = Hub(cloud)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ticker = asyncio.create_task(hub.run())
        try:
            yield
        finally:
            ticker.cancel()
            with suppress(asyncio.CancelledError):
                await ticker

    app = service_app(title="simcloud", summary="A small simulated cloud", lifespan=lifespan)
    app.state.hub = hub  # __main__ ends the watches when the server is asked to stop
    app.add_middleware(Gate, hub=hub, token=token)
    app.add_exception_handler(CloudError, _cloud_error)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(_router(hub))
    app.include_router(compute_router(cloud), prefix="/compute")
    return app


async def _cloud_error(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, CloudError) else 500
    return JSONResponse({"detail": str(exc)}, status)


def _router(hub: Hub) -> APIRouter:
    cloud = hub.cloud
    router = APIRouter(responses=GATED)

    @router.get(
        "/v1/state",
        summary="Every host, VM and group, with the resource version and the incarnation "
        "(a restarted simcloud has another one, and its versions start again)",
    )
    async def state() -> Response:
        return JSONResponse(cloud.snapshot())

    @router.get(
        "/v1/watch",
        summary="Long-poll the changes after resource version `since`",
        responses=refused(410, "`since` is compacted away: relist"),
    )
    async def watch(
        since: Annotated[int, Query(ge=0)],
        timeout: Annotated[float, Query(ge=0, allow_inf_nan=False)] = 25.0,
    ) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, MAX_WATCH_SECONDS)
        while True:
            changed = hub.changed()
            if cloud.stream_cut_active():
                raise HTTPException(503, "the change stream is cut")
            changes = cloud.changes_since(since, MAX_WATCH_CHANGES)
            if changes is None:
                raise HTTPException(410, f"resource version {since} is gone: relist")
            if changes:
                rv = changes[-1]["version"]
                return JSONResponse(
                    {"incarnation": cloud.incarnation, "resource_version": rv, "changes": changes}
                )
            remaining = deadline - loop.time()
            if remaining <= 0 or hub.stopping:
                return JSONResponse(
                    {"incarnation": cloud.incarnation, "resource_version": since, "changes": []}
                )
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    @router.post("/v1/vms/{vm}/actions", status_code=202, responses=CLOUD_REFUSALS)
    async def vm_action(vm: str, body: ActionRequest) -> dict[str, Any]:
        if body.action in GROUP_ACTIONS:
            raise HTTPException(422, f"{body.action} acts on a group: /v1/groups/{{group}}")
        return _start(body, vm)

    @router.post("/v1/groups/{group}/actions", status_code=202, responses=CLOUD_REFUSALS)
    async def group_action(group: str, body: ActionRequest) -> dict[str, Any]:
        if body.action not in GROUP_ACTIONS:
            raise HTTPException(422, f"{body.action} acts on a VM: /v1/vms/{{vm}}")
        return _start(body, group)

    def _start(body: ActionRequest, target: str) -> dict[str, Any]:
        op = cloud.start_action(body.id, body.action, target, body.token, body.params)
        return op.to_json()

    @router.get(
        "/v1/operations",
        summary="Every operation kept (running, and finished within the bound), in the "
        "order they started",
    )
    async def operations() -> dict[str, Any]:
        return {"operations": [op.to_json() for op in cloud.operations()]}

    @router.get("/v1/operations/{op_id}", responses=refused(404, "No such operation"))
    async def operation(op_id: str) -> dict[str, Any]:
        op = cloud.operation(op_id)
        if op is None:
            raise NotFound(f"no operation {op_id}")
        return op.to_json()

    @router.get("/v1/faults", summary="The API faults in force")
    async def faults() -> dict[str, Any]:
        return cloud.faults()

    @router.post("/v1/faults", responses=CLOUD_REFUSALS)
    async def inject(fault: Annotated[Fault, Body()]) -> dict[str, Any]:
        _apply(cloud, fault)
        hub.wake()  # a stream cut ends the watches under way
        return {"applied": fault.kind, "resource_version": cloud.resource_version}

    @router.delete("/v1/faults", summary="End the API faults and the stream cut")
    async def clear() -> dict[str, Any]:
        cloud.clear_faults()
        return cloud.faults()

    @router.post("/v1/vms", status_code=201, responses=CLOUD_REFUSALS)
    async def add_vm(body: NewVm) -> dict[str, Any]:
        return cloud.add_vm(body.name, body.host, body.group)

    @router.delete("/v1/vms/{vm}", status_code=204, responses=CLOUD_REFUSALS)
    async def delete_vm(vm: str) -> Response:
        cloud.delete_vm(vm)
        return Response(status_code=204)

    return router


def _apply(cloud: Cloud, fault: Fault) -> None:
    if isinstance(fault, VmFault):
        (cloud.vm_down if fault.kind == "vm_down" else cloud.vm_up)(fault.vm)
    elif isinstance(fault, HostFault):
        {
            "host_down": cloud.host_down,
            "host_up": cloud.host_up,
            "host_maintenance": cloud.host_maintenance,
        }[fault.kind](fault.host)
    elif isinstance(fault, UtilisationFault):
        cloud.set_utilisation(fault.vm, fault.group, fault.cpu, fault.ram)
    elif isinstance(fault, FlapFault):
        cloud.flap(fault.vm, fault.down_for)
    elif isinstance(fault, ApiFault):
        cloud.api_fault(fault.delay, fault.fail_rate, fault.duration)
    elif isinstance(fault, StreamCut):
        cloud.stream_cut(fault.seconds)
