"""The dispatcher's admin API (port 8001): the dispatcher's views and controls, and the
operations routes (/healthz, /readyz, /metrics) of :func:`shared.http.ops_router`, and
the dead-letter record (list, re-drive). With ``CAROUSEL_API_TOKEN`` set, the controls
(pause, resume, limits, classes, weights, re-drive) need it, checked before the body is
read; the views need it too unless ``ADMIN_VIEWS_OPEN`` (the default)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, FastAPI, Header, HTTPException, Query
from prometheus_client import CollectorRegistry, Gauge
from pydantic import BaseModel, Field

from scheduler.dispatcher.classes import validate_shares
from scheduler.dispatcher.controls import (
    ClassesIn,
    Controls,
    LimitsIn,
    LocalControls,
    NamedLimitsIn,
    Target,
    WeightsIn,
    weights_out,
)
from scheduler.dispatcher.deadletters import DeadLetters
from scheduler.dispatcher.dispatcher import Known
from scheduler.dispatcher.errors import NotDeadLettered, RedriveFailed
from scheduler.dispatcher.forward import FORWARDED, Owners
from scheduler.dispatcher.live import BacklogReader, Proxy, live_views, mount_page
from scheduler.dispatcher.shard_admin import ClusterReader, shard_views
from scheduler.dispatcher.state import DispatcherState
from shared.addresses import local_url
from shared.db import LEDGER_TROUBLE
from shared.docs import service_app
from shared.errors import VmRemoved
from shared.http import (
    LEDGER_DOWN,
    LEDGER_RETRY_AFTER,
    UNDECODABLE,
    guarded_router,
    ledger_down,
    ops_router,
    refused,
    unavailable,
)
from shared.waiting import Waiting

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
    ("parked", "Event messages waiting for their ledger row"),
    ("resent_total", "Tasks sent again by the sweeper since start"),
    ("live_keys", "Event queues consumed (keys in the mapping)"),
    ("retired_total", "Idle keys retired since start (KEY_IDLE_SECONDS)"),
    ("ledger_ok", "0 while the ledger is failing"),
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

    @property
    def parked(self) -> int: ...

    @property
    def resent_total(self) -> int: ...

    @property
    def live_keys(self) -> int: ...

    @property
    def retired_total(self) -> int: ...

    @property
    def ledger_ok(self) -> bool: ...

    @property
    def standby(self) -> bool: ...

    @property
    def not_ready(self) -> str | None: ...

    @property
    def shard_view(self) -> dict[str, Any] | None:
        """This shard (DISPATCHER_PARTITIONS > 0), or None: a single dispatcher."""


class WaitingOut(BaseModel):
    """``GET /waiting/{id}``: what the dispatcher knows of an event, and for a head it
    holds, what holds it."""

    event_id: str
    known: str = Field(description="held, in_flight, or new (neither held nor in flight).")
    waiting: Waiting | None = Field(None, description="For a held head: what holds it.")


def create_admin_app(
    state: DispatcherState[Any],
    session: Session,
    token: str = "",
    dead_letters: DeadLetters | None = None,
    views_open: bool = True,
    backlog: BacklogReader | None = None,
    proxy: Proxy | None = None,
    shards: ClusterReader | None = None,
    controls: Controls | None = None,
    owners: Owners | None = None,
) -> FastAPI:
    """``shards`` reads the cluster of dispatcher shards from the ledger for ``GET
    /shards`` (:mod:`scheduler.dispatcher.shard_admin`); without it there is no such
    route (404)."""
    app = service_app(title="Carousel dispatcher admin", version="0.1.0")

    def session_view() -> dict[str, Any]:
        return {
            "connected": session.connected.is_set(),
            "mapping_version": session.mapping_version,
            "dead_lettered": session.dead_lettered,
            "active": session.active,
            "parked": session.parked,
            "resent_total": session.resent_total,
            "live_keys": session.live_keys,
            "retired_total": session.retired_total,
            "ledger_ok": session.ledger_ok,
            "standby": session.standby,
            "not_ready": session.not_ready,
            "mode": "single" if session.shard_view is None else "shards",
            "shard": session.shard_view,
        }

    def stats() -> dict[str, Any]:
        return {**state.stats(), **session_view()}

    def ready() -> str | None:
        """Why it is not dispatching — a standby, no broker session, the ledger out of
        reach — or None (see :mod:`scheduler.dispatcher.readiness`)."""
        return session.not_ready

    registry, refresh = _metrics(stats)
    views_token = "" if views_open else token
    app.include_router(dispatcher_views(state, stats, views_token, owners))
    app.include_router(dispatcher_controls(state, controls or LocalControls(Target(state)), token))
    app.include_router(
        live_views(
            state,
            session_view,
            backlog or BacklogReader(dict),
            proxy
            or Proxy({"producer": local_url("producer"), "elasticity": local_url("elasticity")}),
            views_token,
        )
    )
    mount_page(app)
    if dead_letters is not None:
        app.include_router(dead_letter_views(dead_letters, views_token))
        app.include_router(dead_letter_controls(dead_letters, token))
    if shards is not None:
        app.include_router(shard_views(shards, views_token))
    app.include_router(ops_router(ready, registry, refresh))
    return app


def dispatcher_views(
    state: DispatcherState[Any], stats: Stats, token: str, owners: Owners | None = None
) -> APIRouter:
    """/stats, /dispatches, /classes, /weights, /limits and /waiting/{id} over the
    dispatcher."""
    router = guarded_router(token)

    @router.get("/stats")
    def get_stats() -> dict[str, Any]:
        return stats()

    @router.get("/dispatches")
    def get_dispatches(limit: int = Query(100, ge=1, le=10000)) -> list[dict[str, Any]]:
        return state.recent_dispatches(limit)

    @router.get("/classes")
    def get_classes() -> dict[str, Any]:
        """The policies' classes, and per class: heads held, keys it serves now, picks
        served since start, its minimum share and its credit."""
        return state.classes()

    @router.get("/limits/named")
    def get_named_limits() -> dict[str, Any]:
        """The action limits and group budgets, each with its use now (actions in flight,
        VMs of the group in action) and the keys waiting on it; every group in action."""
        return state.named_limits()

    @router.get("/weights")
    def get_weights() -> dict[str, dict[str, int]]:
        """The weights of hosts, VMs (``host/vm``) and policies that are not 1."""
        return weights_out(state.weights())

    @router.get("/limits")
    def get_limits() -> dict[str, Any]:
        """Each limit with its current use: slots in flight of MAX_PARALLEL, and the
        busiest VM and host with how many VMs and hosts are at their limit."""
        return state.limits_use()

    @router.get("/waiting/{event_id}", response_model=WaitingOut)
    def get_waiting(
        event_id: str,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
        forwarded: Annotated[str | None, Header(alias=FORWARDED, include_in_schema=False)] = None,
    ) -> WaitingOut:
        """What holds a head this dispatcher holds (``held``: true, and ``waiting``);
        else what it knows of the event: ``in_flight`` (dispatched), or ``new`` (not
        held here: no delivery of it has reached this dispatcher, or it is a standby). A
        shard asked about an event of a host another shard serves asks that shard."""
        known, why = state.why(event_id)
        if known is Known.NEW and owners is not None and forwarded is None:
            try:
                answer = owners.waiting(event_id, authorization)
            except LEDGER_TROUBLE:
                answer = None
            if answer is not None:
                return WaitingOut.model_validate(answer)
        return WaitingOut(event_id=event_id, known=known.value, waiting=why)

    return router


#: what the live changes of limits, classes and weights answer on a shard
def dispatcher_controls(state: DispatcherState[Any], controls: Controls, token: str) -> APIRouter:
    """/pause, /resume, /limits, /limits/named, /classes and /weights. On a shard a pause
    or resume reaches every shard at its next round (the shards' row of the dispatcher
    lease), and a change of limits, classes or weights too (the ledger's log of changes,
    :mod:`scheduler.dispatcher.controls`); a ledger that fails then answers 503, nothing
    changed."""
    router = guarded_router(token)

    def submit(section: str, body: BaseModel) -> Any:
        try:
            return controls.submit(section, body)
        except LEDGER_TROUBLE as exc:
            raise ledger_down(exc) from exc

    @router.post("/pause")
    def pause() -> dict[str, Any]:
        state.pause()
        return {"paused": True}

    @router.post("/resume")
    def resume() -> dict[str, Any]:
        state.resume()
        return {"paused": False}

    @router.put("/limits", responses={**UNDECODABLE, **LEDGER_DOWN})
    def put_limits(body: LimitsIn) -> dict[str, Any]:
        """Change some of the limits, live (until a restart, which reads MAX_PARALLEL,
        PER_VM_LIMIT and PER_HOST_LIMIT again). On a shard, ``max_parallel`` is the global
        limit the shards split."""
        answer: dict[str, Any] = submit("limits", body)
        return answer

    @router.put("/limits/named", responses={**UNDECODABLE, **LEDGER_DOWN})
    def put_named_limits(body: NamedLimitsIn) -> dict[str, Any]:
        """Change the action limits, the group budgets and/or the default budget, live
        (until a restart, which reads ACTION_LIMITS, GROUP_BUDGETS and
        DEFAULT_GROUP_BUDGET again). Heads held only by a limit raised go at once."""
        answer: dict[str, Any] = submit("named", body)
        return answer

    @router.put(
        "/classes",
        responses={
            **UNDECODABLE,
            **refused(409, "The minimum shares add up to more than 1"),
            **LEDGER_DOWN,
        },
    )
    def put_classes(body: ClassesIn) -> dict[str, Any]:
        """Change the policies' classes and/or the classes' minimum shares, live (until
        a restart, which reads POLICY_PRIORITIES and CLASS_MIN_SHARES again). Shares that
        each fit but add up to more than 1 are refused with 409 (a schema cannot say so):
        nothing changes."""
        if body.min_shares is not None:
            try:
                validate_shares(body.min_shares)
            except ValueError as exc:
                raise HTTPException(409, f"min_shares: {exc}") from exc
        answer: dict[str, Any] = submit("classes", body)
        return answer

    @router.put("/weights", responses={**UNDECODABLE, **LEDGER_DOWN})
    def put_weights(body: WeightsIn) -> dict[str, dict[str, int]]:
        """Change weights of hosts, VMs and/or policies, live (until a restart, which
        reads HOST_WEIGHTS, VM_WEIGHTS and POLICY_WEIGHTS again)."""
        answer: dict[str, dict[str, int]] = submit("weights", body)
        return answer

    return router


def dead_letter_views(dead_letters: DeadLetters, token: str) -> APIRouter:
    """GET /dead-letters."""
    router = guarded_router(token)

    @router.get("/dead-letters", responses=LEDGER_DOWN)
    def list_dead_letters(limit: int = Query(100, ge=1, le=10000)) -> list[dict[str, Any]]:
        """Events that ended failed out of attempts or time, newest first."""
        try:
            return dead_letters.recent(limit)
        except LEDGER_TROUBLE as exc:
            raise ledger_down(exc) from exc

    return router


def dead_letter_controls(dead_letters: DeadLetters, token: str) -> APIRouter:
    """POST /dead-letters/{id}/redrive."""
    router = guarded_router(token)

    @router.post(
        "/dead-letters/{event_id}/redrive",
        responses={
            **refused(409, "Not dead-lettered, or its VM was removed from the mapping"),
            **unavailable("Could not be published, or the ledger is unavailable; retry"),
        },
    )
    def redrive(event_id: str) -> dict[str, Any]:
        """Queue a dead-lettered event again, attempts reset: it takes its turn anew. An
        event whose VM was removed is refused (409): post it again under a new id, or
        bring the VM back (post an event for it) and re-drive."""
        try:
            event = dead_letters.redrive(event_id)
        except (NotDeadLettered, VmRemoved) as exc:
            raise HTTPException(409, str(exc)) from exc
        except RedriveFailed as exc:
            raise HTTPException(
                503, str(exc), headers={"Retry-After": str(LEDGER_RETRY_AFTER)}
            ) from exc
        except LEDGER_TROUBLE as exc:
            raise ledger_down(exc) from exc
        return {"id": event.id, "status": "queued"}

    return router


def _metrics(stats: Stats) -> tuple[CollectorRegistry, Callable[[], None]]:
    """A registry of the dispatcher's gauges, and the refresh that sets them from
    ``stats()`` before a scrape."""
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(f"carousel_dispatcher_{name}", help_, registry=registry)
        for name, help_ in GAUGES
    }

    def refresh() -> None:
        current = stats()
        for name, gauge in gauges.items():
            gauge.set(float(current[name]))

    return registry, refresh
