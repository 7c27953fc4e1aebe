"""``GET /events/{id}``'s ``waiting``: the ledger's reasons (its place in its key, the
dispatcher paused, host or VM unavailable), the dispatcher's for a head it holds (asked
over real HTTP: a dispatcher admin app served by uvicorn on loopback), and the answers
when no dispatcher is configured, none answers, or it does not hold the event."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from harness.processes import free_port
from producer.api import create_app
from producer.metrics import ProducerMetrics
from producer.publisher import Publisher
from producer.service import EventService
from producer.settings import ProducerSettings
from producer.waiting import DispatcherClient
from scheduler.dispatcher.admin import create_admin_app
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.state import DispatcherState
from shared.lease import DISPATCHER, Lease
from shared.models import Action, VmEventMessage
from shared.store import Store
from tests.asgi import call
from tests.ledgers import accept, ensure_keys
from tests.unit.admin_doubles import FakeSession
from tests.unit.test_api_contract import conforms

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def ev(event_id: str, policy: str = "p", at: float = 1.0, vm: str = "v") -> VmEventMessage:
    return VmEventMessage(
        id=event_id, host="h", vm=vm, policy=policy, action=Action.HEAL, accepted_at=at
    )


def queue(store: Store, *events: VmEventMessage) -> None:
    ensure_keys(store, [e.key for e in events])
    accept(store, events)
    store.confirm(events)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield s
    s.engine.dispose()


def producer(store: Store, dispatcher: DispatcherClient | None) -> FastAPI:
    settings = ProducerSettings(
        carousel_db_url=str(store.engine.url), carousel_api_token=TOKEN, dispatcher_url=""
    )
    app = create_app(settings)
    app.state.settings = settings
    app.state.metrics = ProducerMetrics()
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1//", settings.topology, 1.0)
    app.state.service = EventService(store, publisher, dispatcher=dispatcher)
    app.state.monitor = None
    return app


def waiting(app: FastAPI, event_id: str) -> dict[str, Any]:
    got = call(app, "GET", f"/events/{event_id}", headers=AUTH)
    assert got.status_code == 200, got.text
    conforms(app, "GET /events/{event_id}", got)
    body: dict[str, Any] = got.json()
    assert body["status"] == "queued"
    assert body["waiting"] is not None
    return body["waiting"]  # type: ignore[no-any-return]


@pytest.fixture
def served_dispatcher() -> Iterator[tuple[str, DispatcherState[Any]]]:
    """A dispatcher's admin app served over real HTTP, on loopback; its state."""
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(10, 1, 0)))
    app = create_admin_app(state, FakeSession(), token=TOKEN, views_open=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="admin", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "admin app did not start"
        time.sleep(0.02)
    try:
        yield url, state
    finally:
        server.should_exit = True
        thread.join(10)


# -- the ledger's reasons ---------------------------------------------------------------
def test_behind_in_its_key_names_the_head(store: Store) -> None:
    queue(store, ev("a", at=1.0), ev("b", at=2.0), ev("c", at=3.0))
    app = producer(store, None)
    got = waiting(app, "c")
    assert got["reason"] == "behind_in_key"
    assert (got["ahead"], got["event"], got["source"]) == (2, "a", "ledger")
    assert got["text"] == "3rd in its key (host h, vm v, policy p): behind a and 1 more"
    assert waiting(app, "b")["text"] == "2nd in its key (host h, vm v, policy p): behind a"


def test_the_head_with_no_dispatcher_configured(store: Store) -> None:
    queue(store, ev("a"), ev("x", policy="q"))
    got = waiting(producer(store, None), "a")
    assert got["reason"] == "not_held"
    assert "DISPATCHER_URL is empty" in got["text"]


def test_dispatched_and_cancelled_events_have_no_waiting(store: Store) -> None:
    queue(store, ev("a"), ev("b", policy="q"))
    store.mark_dispatched_many(["a"], "d1")
    store.cancel("b")
    app = producer(store, None)
    for event_id in ("a", "b"):
        got = call(app, "GET", f"/events/{event_id}", headers=AUTH)
        assert got.json()["waiting"] is None
        conforms(app, "GET /events/{event_id}", got)


def test_paused_by_the_ledger(store: Store) -> None:
    queue(store, ev("a"))
    store.take_lease(Lease(DISPATCHER, "d1", 30.0), paused=True)
    got = waiting(producer(store, None), "a")
    assert (got["reason"], got["source"]) == ("paused", "ledger")


def test_host_or_vm_unavailable_by_the_ledger(store: Store) -> None:
    queue(store, ev("a"), ev("b", at=2.0))
    app = producer(store, None)
    store.set_vm_available("h", "v", False)
    assert waiting(app, "a")["reason"] == "vm_unavailable"
    store.set_host_available("h", False)
    got = waiting(app, "b")
    assert (got["reason"], got["text"]) == ("host_unavailable", "host h is unavailable")


def test_one_requests_events_of_a_key_are_ordered_by_id_without_a_dispatcher(
    store: Store,
) -> None:
    queue(store, ev("m", at=1.0), ev("k", at=1.0))
    app = producer(store, None)
    assert waiting(app, "m")["event"] == "k"
    assert waiting(app, "k")["reason"] == "not_held"


# -- the dispatcher's reasons, over HTTP --------------------------------------------------
def test_the_dispatcher_says_what_holds_its_head(
    store: Store, served_dispatcher: tuple[str, DispatcherState[Any]]
) -> None:
    url, state = served_dispatcher
    first, second = ev("first", policy="p"), ev("second", policy="q")
    queue(store, first, second, ev("third", policy="q", at=5.0))
    state.offer(first, 1)
    state.offer(second, 2)
    assert [h.event.id for h in state.pick_batch(1, lambda: 0.0)] == ["first"]
    store.mark_dispatched_many(["first"], "d1")
    app = producer(store, DispatcherClient(url, 2.0, TOKEN))
    got = waiting(app, "second")
    assert (got["reason"], got["source"], got["event"]) == ("vm_busy", "dispatcher", "first")
    assert got["text"] == "VM v busy with first (1/1 per VM)"
    behind = waiting(app, "third")  # the ledger is sure: the dispatcher is not asked
    assert (behind["reason"], behind["event"]) == ("behind_in_key", "second")


def test_the_dispatcher_does_not_hold_it(
    store: Store, served_dispatcher: tuple[str, DispatcherState[Any]]
) -> None:
    url, _ = served_dispatcher
    queue(store, ev("a"))
    got = waiting(producer(store, DispatcherClient(url, 2.0, TOKEN)), "a")
    assert (got["reason"], got["source"]) == ("not_held", "producer")
    assert got["text"] == "no dispatcher holds it: none running, or it has not reached it yet"


def test_the_dispatcher_holds_the_first_of_one_requests_events(
    store: Store, served_dispatcher: tuple[str, DispatcherState[Any]]
) -> None:
    """Same instant: the ledger orders by id (k before m), the queue by the request (m
    first); the dispatcher holding m is believed for m."""
    url, state = served_dispatcher
    m, k = ev("m", at=1.0), ev("k", at=1.0)
    queue(store, m, k)
    state.offer(m, 1)
    app = producer(store, DispatcherClient(url, 2.0, TOKEN))
    assert waiting(app, "m")["reason"] == "next_in_turn"


def test_a_dispatcher_that_does_not_answer_is_no_error(store: Store) -> None:
    queue(store, ev("a"))
    url = f"http://127.0.0.1:{free_port()}"
    got = waiting(producer(store, DispatcherClient(url, 0.5, TOKEN)), "a")
    assert (got["reason"], got["source"]) == ("dispatcher_unreachable", "producer")
    assert url in got["text"]


def test_a_dispatcher_refusing_the_token_is_no_error(
    store: Store, served_dispatcher: tuple[str, DispatcherState[Any]]
) -> None:
    url, _ = served_dispatcher
    queue(store, ev("a"))
    got = waiting(producer(store, DispatcherClient(url, 2.0, "wrong")), "a")
    assert got["reason"] == "dispatcher_unreachable"
    assert "401" in got["text"]


def test_the_openapi_documents_waiting(store: Store) -> None:
    schema = producer(store, None).openapi()
    event = schema["components"]["schemas"]["EventOut"]["properties"]["waiting"]
    assert "queued" in event["description"]
    waiting_schema = schema["components"]["schemas"]["Waiting"]
    assert {"reason", "text", "source", "event", "ahead"} <= set(waiting_schema["properties"])
    assert "behind_in_key" in waiting_schema["properties"]["reason"]["description"]
