"""The producer's 422 for ``POST /events``, in process (no broker is reached): only the
errors of the form the body has — one event, or a batch — each naming its field with a
message in words, in the shape the OpenAPI documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI

from producer.api import create_app
from producer.metrics import ProducerMetrics
from producer.publisher import Publisher
from producer.schemas import MAX_BATCH
from producer.service import EventService
from producer.settings import ProducerSettings
from shared.names import NAME_RULE
from shared.store import Store
from tests.asgi import call
from tests.fuzz import CONFORMANCE, config, operation

EVENT = {"host": "h1", "vm": "h1-vm1", "policy": "ops", "action": "heal"}


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[tuple[FastAPI, Store]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = ProducerSettings(carousel_db_url=url)
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


def refused(app: FastAPI, body: Any) -> list[tuple[list[str | int], str]]:
    """The 422's errors as (location, message), checked against the OpenAPI."""
    got = call(app, "POST", "/events", json=body)
    assert got.status_code == 422, got.text
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config(token=False))
    operation(schema, "POST /events").Case().validate_response(got, checks=CONFORMANCE)
    return [(e["loc"], e["msg"]) for e in got.json()["detail"]]


def test_a_single_event_names_only_what_is_wrong_with_it(
    producer: tuple[FastAPI, Store],
) -> None:
    """Six errors before: the bad host, and five saying the body was no batch."""
    app, store = producer
    assert refused(app, {**EVENT, "host": "bad name"}) == [
        (["body", "VmEventIn", "host"], NAME_RULE)
    ]
    missing = {k: v for k, v in EVENT.items() if k != "policy"}
    assert refused(app, missing) == [(["body", "VmEventIn", "policy"], "Field required")]
    assert refused(app, {**EVENT, "colour": "red"}) == [
        (["body", "VmEventIn", "colour"], "Extra inputs are not permitted")
    ]
    assert store.all_keys() == []


def test_a_batch_names_only_its_own_errors(producer: tuple[FastAPI, Store]) -> None:
    app, store = producer
    bad = [EVENT, {**EVENT, "vm": "-vm", "action": "reboot"}]
    errors = refused(app, {"events": bad})
    assert [loc for loc, _ in errors] == [
        ["body", "EventBatchIn", "events", 1, "vm"],
        ["body", "EventBatchIn", "events", 1, "action"],
    ]
    assert errors[0][1] == NAME_RULE
    assert errors[1][1].startswith("Input should be 'heal', 'scale_out'")
    assert refused(app, {"events": []}) == [
        (
            ["body", "EventBatchIn", "events"],
            "List should have at least 1 item after validation, not 0",
        )
    ]
    assert store.all_keys() == []


@pytest.mark.parametrize("body", [[EVENT], "heal", 3], ids=["list", "str", "int"])
def test_a_body_of_neither_form_says_what_the_forms_are(
    producer: tuple[FastAPI, Store], body: Any
) -> None:
    app, _ = producer
    forms = f'must be one event (a JSON object) or {{"events": [...]}} with 1 to {MAX_BATCH} events'
    assert refused(app, body) == [(["body"], forms)]


def test_a_payload_too_large_says_its_size(producer: tuple[FastAPI, Store]) -> None:
    app, _ = producer
    [(loc, msg)] = refused(app, {**EVENT, "payload": {"x": "y" * 70_000}})
    assert loc == ["body", "VmEventIn", "payload"]
    assert msg == "payload larger than 65536 bytes: 70008 bytes of JSON (UTF-8, compact)"


def test_the_openapi_documents_the_two_forms(producer: tuple[FastAPI, Store]) -> None:
    app, _ = producer
    body = app.openapi()["paths"]["/events"]["post"]["requestBody"]
    forms = body["content"]["application/json"]["schema"]["oneOf"]
    assert [f["$ref"].rsplit("/", 1)[1] for f in forms] == ["VmEventIn", "EventBatchIn"]
    host = app.openapi()["components"]["schemas"]["VmEventIn"]["properties"]["host"]
    assert host["pattern"] == "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$" and host["maxLength"] == 128


def test_a_bad_priority_is_named(producer: tuple[FastAPI, Store]) -> None:
    app, _store = producer
    [(loc, msg)] = refused(app, {**EVENT, "priority": "asap"})
    assert loc == ["body", "VmEventIn", "priority"]
    assert msg == "Input should be 'urgent', 'normal' or 'background'"
    [(loc, _)] = refused(app, {"events": [EVENT, {**EVENT, "priority": 1}]})
    assert loc == ["body", "EventBatchIn", "events", 1, "priority"]


def test_a_bad_group_is_named(producer: tuple[FastAPI, Store]) -> None:
    app, _store = producer
    [(loc, msg)] = refused(app, {**EVENT, "group": "web tier"})
    assert (loc, msg) == (["body", "VmEventIn", "group"], NAME_RULE)
    [(loc, _)] = refused(app, {"events": [EVENT, {**EVENT, "group": 5}]})
    assert loc == ["body", "EventBatchIn", "events", 1, "group"]
