"""``DELETE /events/{id}`` and the ``coalesce`` field, in process: what the ledger
decides, answered as docs/design.md §4 says (the broker is never reached: a cancel
needs none). Posting coalescing events through the broker is in
tests/integration/test_cancel.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from producer.api import create_app
from producer.metrics import ProducerMetrics
from producer.publisher import Publisher
from producer.service import EventService
from producer.settings import ProducerSettings
from shared.models import Status
from shared.store import Store
from tests.asgi import call
from tests.ledgers import accept
from tests.unit.test_api_contract import conforms
from tests.unit.test_store import LEASE, ev

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[tuple[FastAPI, Store]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = ProducerSettings(carousel_db_url=url, carousel_api_token=TOKEN)
    store = Store.connect(url)
    app = create_app(settings)
    app.state.settings = settings
    app.state.metrics = ProducerMetrics()
    app.state.service = EventService(
        store, Publisher("amqp://guest:guest@127.0.0.1:1//", settings.topology, 1.0)
    )
    app.state.monitor = None
    yield app, store
    store.engine.dispose()


def test_a_queued_event_is_cancelled_with_its_view(producer: tuple[FastAPI, Store]) -> None:
    app, store = producer
    accept(store, [ev("a", payload={"k": 1})])
    store.confirm([ev("a")])
    got = call(app, "DELETE", "/events/a", headers=AUTH)
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["id"], body["status"], body["payload"]) == ("a", "cancelled", {"k": 1})
    assert body["finished_at"] is not None and body["dispatched_at"] is None
    conforms(app, "DELETE /events/{event_id}", got)
    assert store.status_of("a") is Status.CANCELLED
    assert call(app, "GET", "/events/a", headers=AUTH).json()["status"] == "cancelled"
    # again: the same answer, nothing counted twice
    again = call(app, "DELETE", "/events/a", headers=AUTH)
    assert (again.status_code, again.json()) == (200, body)
    metrics = call(app, "GET", "/metrics").text
    assert "carousel_events_cancelled_total 1.0" in metrics


def test_an_unknown_event_is_a_404(producer: tuple[FastAPI, Store]) -> None:
    app, _ = producer
    got = call(app, "DELETE", "/events/nope", headers=AUTH)
    assert got.status_code == 404, got.text
    conforms(app, "DELETE /events/{event_id}", got)


@pytest.mark.parametrize("how", ["dispatched", "running", "succeeded"])
def test_an_event_dispatched_already_is_a_409_with_its_status(
    producer: tuple[FastAPI, Store], how: str
) -> None:
    app, store = producer
    accept(store, [ev("a")])
    store.confirm([ev("a")])
    store.mark_dispatched_many(["a"], "d")
    if how != "dispatched":
        store.claim("a", "d", "w", LEASE)
    if how == "succeeded":
        store.finish("a", 1, True, None)
    before = store.get("a")
    got = call(app, "DELETE", "/events/a", headers=AUTH)
    assert got.status_code == 409, got.text
    assert got.json()["status"] == how and got.json()["id"] == "a"
    assert how in got.json()["detail"]
    conforms(app, "DELETE /events/{event_id}", got)
    assert store.get("a") == before


def test_a_cancel_needs_the_token(producer: tuple[FastAPI, Store]) -> None:
    app, store = producer
    accept(store, [ev("a")])
    store.confirm([ev("a")])
    got = call(app, "DELETE", "/events/a")
    assert got.status_code == 401
    assert store.status_of("a") is Status.QUEUED


@pytest.mark.parametrize("value", ["yes", 1, "true", None])
def test_coalesce_must_be_a_json_boolean(producer: tuple[FastAPI, Store], value: object) -> None:
    app, store = producer
    event = {"host": "h", "vm": "v", "policy": "p", "action": "heal", "id": "e1"}
    for body in ({**event, "coalesce": value}, {"events": [{**event, "coalesce": value}]}):
        got = call(app, "POST", "/events", json=body, headers=AUTH)
        if value is None:  # null: as if absent, then the broker (out of reach) answers
            assert got.status_code == 503, got.text
            continue
        assert got.status_code == 422, got.text
        assert got.json()["detail"][0]["loc"][-1] == "coalesce"
    assert store.get("e1") is None


def test_coalesce_policies_are_names() -> None:
    assert ProducerSettings(coalesce_policies=" auto-heal, resize ,").coalescing_policies == {
        "auto-heal",
        "resize",
    }
    with pytest.raises(ValueError, match="not a policy name"):
        ProducerSettings(coalesce_policies="a b")
