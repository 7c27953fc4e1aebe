"""Regression tests for what the API fuzzing (tests/*/test_*_fuzz.py) found, each as
the one request that showed it, in process and without a broker:

- the producer's OpenAPI did not list most of what the producer answers (400, 401, 404,
  409, 413, 503), nor did the operations routes (/readyz's 503, /metrics' media type);
- with CAROUSEL_API_TOKEN set, a call without the token whose body could not be read got
  a 400 or 422 about that body instead of the 401;
- ``{"available": ...}`` took 1, "yes" or "f" for a boolean.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from producer.api import create_app
from producer.metrics import ProducerMetrics
from producer.publisher import Publisher
from producer.service import EventService
from producer.settings import ProducerSettings
from shared.http import PROMETHEUS_TEXT, ops_router
from shared.store import Store
from tests.asgi import call

TOKEN = "s3cret"
JSON = {"content-type": "application/json"}
EVENT = {"host": "h", "vm": "v", "policy": "p", "action": "heal", "id": "e1"}

#: what docs/design.md §4 says each producer route answers, besides its 2xx and 422
PRODUCER_CONTRACT = {
    ("post", "/events"): {"400", "401", "409", "413", "503"},
    ("get", "/events/{event_id}"): {"401", "404", "503"},
    ("get", "/mapping"): {"401", "503"},
    ("put", "/hosts/{host}/availability"): {"400", "401", "404", "413", "503"},
    ("put", "/hosts/{host}/vms/{vm}/availability"): {"400", "401", "404", "413", "503"},
    ("delete", "/hosts/{host}/vms/{vm}"): {"401", "404", "409", "503"},
}


def test_the_producer_openapi_lists_every_answer_of_the_contract() -> None:
    paths = create_app(ProducerSettings()).openapi()["paths"]
    for (method, path), codes in PRODUCER_CONTRACT.items():
        documented = set(paths[path][method]["responses"])
        assert codes <= documented, (method, path, sorted(codes - documented))


def test_the_operations_routes_document_what_they_answer() -> None:
    app = FastAPI()
    app.include_router(ops_router(lambda: "not yet", CollectorRegistry()))
    paths = app.openapi()["paths"]
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {PROMETHEUS_TEXT}
    assert call(app, "GET", "/metrics").headers["content-type"].startswith(PROMETHEUS_TEXT)
    assert {"200", "503"} <= set(paths["/readyz"]["get"]["responses"])
    assert call(app, "GET", "/readyz").status_code == 503


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[tuple[FastAPI, Store]]:
    """The producer with CAROUSEL_API_TOKEN set, in process: what its lifespan would set
    up, but a broker that is never reached (nothing here may publish)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = ProducerSettings(carousel_db_url=url, carousel_api_token=TOKEN)
    store = Store.connect(url)
    app = create_app(settings)
    app.state.settings = settings
    app.state.metrics = ProducerMetrics()
    app.state.service = EventService(
        store, Publisher("amqp://guest:guest@127.0.0.1:1//", settings.topology, 1.0)
    )
    yield app, store
    store.engine.dispose()


@pytest.mark.parametrize("body", [b'{"host": \xff}', b'{"host": '], ids=["not-utf8", "not-json"])
@pytest.mark.parametrize(
    "method,path", [("POST", "/events"), ("PUT", "/hosts/h/availability")], ids=["post", "put"]
)
def test_without_the_token_a_body_it_cannot_read_still_gets_401(
    producer: tuple[FastAPI, Store], body: bytes, method: str, path: str
) -> None:
    app, store = producer
    refused = call(app, method, path, content=body, headers=JSON)
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"] == "Bearer"
    # with the token, the body is what is wrong
    auth = {**JSON, "Authorization": f"Bearer {TOKEN}"}
    assert call(app, method, path, content=body, headers=auth).status_code in (400, 422)
    assert store.all_keys() == [] and store.get("e1") is None


def test_without_the_token_a_valid_event_gets_401_and_nothing_is_stored(
    producer: tuple[FastAPI, Store],
) -> None:
    app, store = producer
    assert call(app, "POST", "/events", json=EVENT).status_code == 401
    assert store.get("e1") is None


@pytest.mark.parametrize("value", [1, 0, "yes", "f", 1.0, None])
def test_availability_must_be_a_json_boolean(
    producer: tuple[FastAPI, Store], value: object
) -> None:
    app, _ = producer
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/hosts/h/availability", "/hosts/h/vms/v/availability"):
        got = call(app, "PUT", path, json={"available": value}, headers=auth)
        assert got.status_code == 422, (path, value, got.text)
        assert [e["loc"] for e in got.json()["detail"]] == [["body", "available"]]
    # a boolean is fine (and the host unknown)
    got = call(app, "PUT", "/hosts/h/availability", json={"available": True}, headers=auth)
    assert got.status_code == 404, got.text
