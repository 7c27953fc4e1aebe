"""Regression tests for what the API fuzzing (tests/*/test_*_fuzz.py) found, each as
the one request that showed it, in process and without a broker:

- the producer's OpenAPI did not list most of what the producer answers (400, 401, 404,
  409, 413, 503), nor did the operations routes (/readyz's 503, /metrics' media type);
  then the 413 that every route answers to a body over MAX_BODY_BYTES (Starlette's, in
  plain text), and the headers of the 401 and the 503, were still missing (the live
  fuzzing meets neither a 413 nor a 503: each is tried here);
- with CAROUSEL_API_TOKEN set, a call without the token whose body could not be read got
  a 400 or 422 about that body instead of the 401;
- ``{"available": ...}`` took 1, "yes" or "f" for a boolean.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from producer.api import create_app
from producer.metrics import ProducerMetrics
from producer.publisher import Publisher
from producer.service import EventService
from producer.settings import ProducerSettings
from shared.http import MAX_JSON_DEPTH, PROMETHEUS_TEXT, ops_router
from shared.store import Store
from tests.asgi import call
from tests.fuzz import CONFORMANCE, config, labels, operation

TOKEN = "s3cret"
JSON = {"content-type": "application/json"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVENT = {"host": "h", "vm": "v", "policy": "p", "action": "heal", "id": "e1"}
MAX_BODY_BYTES = 1024

#: what docs/design.md §4 says each producer route answers, besides its 2xx and 422
PRODUCER_CONTRACT = {
    ("post", "/events"): {"400", "401", "409", "413", "503"},
    ("get", "/events/{event_id}"): {"401", "404", "413", "503"},
    ("delete", "/events/{event_id}"): {"401", "404", "409", "413", "503"},
    ("get", "/mapping"): {"401", "413", "503"},
    ("put", "/hosts/{host}/availability"): {"400", "401", "404", "413", "503"},
    ("put", "/hosts/{host}/vms/{vm}/availability"): {"400", "401", "404", "413", "503"},
    ("delete", "/hosts/{host}/vms/{vm}"): {"401", "404", "409", "413", "503"},
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
    settings = ProducerSettings(
        carousel_db_url=url, carousel_api_token=TOKEN, max_body_bytes=MAX_BODY_BYTES
    )
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


def conforms(app: FastAPI, label: str, response: httpx.Response) -> None:
    """``response`` is what ``app``'s OpenAPI documents of ``label``: status code,
    content type, headers and body."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config(token=True))
    operation(schema, label).Case().validate_response(response, checks=CONFORMANCE)


def test_every_route_answers_a_documented_413_to_a_body_too_large(
    producer: tuple[FastAPI, Store],
) -> None:
    """Even a route that reads no body: a Content-Length over the limit is enough."""
    app, store = producer
    for label in labels(app.openapi()):
        method, path = label.split(" ", 1)
        concrete = path.format(event_id="e1", host="h", vm="v")
        got = call(app, method, concrete, content=b"{" * (MAX_BODY_BYTES + 1), headers=AUTH)
        assert got.status_code == 413, (label, got.status_code, got.text)
        conforms(app, label, got)
    assert store.all_keys() == []


def test_a_broker_out_of_reach_gets_a_documented_503_that_says_when_to_retry(
    producer: tuple[FastAPI, Store],
) -> None:
    app, store = producer
    got = call(app, "POST", "/events", json=EVENT, headers=AUTH)
    assert got.status_code == 503, got.text
    assert got.headers["retry-after"] == "1"
    conforms(app, "POST /events", got)
    assert store.get("e1") is None


@pytest.mark.parametrize(
    "method,path,label",
    [
        ("POST", "/events", "POST /events"),
        ("PUT", "/hosts/h/availability", "PUT /hosts/{host}/availability"),
        ("PUT", "/hosts/h/vms/v/availability", "PUT /hosts/{host}/vms/{vm}/availability"),
    ],
    ids=["post", "put-host", "put-vm"],
)
def test_a_body_that_is_not_utf8_gets_a_documented_400(
    producer: tuple[FastAPI, Store], method: str, path: str, label: str
) -> None:
    app, _ = producer
    got = call(app, method, path, content=b'{"host": \xff}', headers={**JSON, **AUTH})
    assert got.status_code == 400, got.text
    conforms(app, label, got)


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
    auth = {**JSON, **AUTH}
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
    for path in ("/hosts/h/availability", "/hosts/h/vms/v/availability"):
        got = call(app, "PUT", path, json={"available": value}, headers=AUTH)
        assert got.status_code == 422, (path, value, got.text)
        assert [e["loc"] for e in got.json()["detail"]] == [["body", "available"]]
    # a boolean is fine (and the host unknown)
    got = call(app, "PUT", "/hosts/h/availability", json={"available": True}, headers=AUTH)
    assert got.status_code == 404, got.text


def nested(depth: int) -> str:
    return '{"a":' * depth + "{}" + "}" * depth


@pytest.fixture
def open_producer(ledger_url: str) -> Iterator[tuple[FastAPI, Store]]:
    """The producer with the default settings (no token, the default body limit) over a
    fresh ledger, SQLite and PostgreSQL in turn; its broker never reached."""
    settings = ProducerSettings(carousel_db_url=ledger_url)
    store = Store.connect(ledger_url)
    app = create_app(settings)
    app.state.settings = settings
    app.state.metrics = ProducerMetrics()
    app.state.service = EventService(
        store, Publisher("amqp://guest:guest@127.0.0.1:1//", settings.topology, 1.0)
    )
    yield app, store
    store.engine.dispose()


def test_no_nesting_of_a_body_gets_a_500(open_producer: tuple[FastAPI, Store]) -> None:
    """A body nested near the interpreter's recursion limit was parsed, then broke
    what handled it (the payload's size, a 422 echoing the input): a 500 at some depth
    just under the limit. Every depth up to past it is a documented 4xx now, and a
    payload nested deeper than the services take is a 422 before anything is stored
    (pydantic cannot write it to the broker)."""
    app, store = open_producer
    limit = sys.getrecursionlimit()
    for depth in range(limit - 120, limit + 10):
        for body in (
            {**EVENT, "payload": "PAYLOAD"},
            {**EVENT, "host": "PAYLOAD"},
        ):
            content = json.dumps(body).replace('"PAYLOAD"', nested(depth))
            got = call(app, "POST", "/events", content=content, headers=JSON)
            assert got.status_code in (400, 422), (depth, got.status_code, got.text[:200])
    deep = json.dumps({**EVENT, "payload": "PAYLOAD"}).replace('"PAYLOAD"', nested(100))
    got = call(app, "POST", "/events", content=deep, headers=JSON)
    assert got.status_code == 422, got.text[:200]
    assert got.json()["detail"][0]["msg"] == f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    conforms(app, "POST /events", got)
    assert store.get("e1") is None
    shallow = json.dumps({**EVENT, "payload": "PAYLOAD"}).replace('"PAYLOAD"', nested(60))
    got = call(app, "POST", "/events", content=shallow, headers=JSON)
    assert got.status_code == 503, got.text[:200]  # taken: on to the (absent) broker


@pytest.mark.parametrize("event_id", ["%00", "a%00b"])
def test_an_id_the_ledger_cannot_hold_is_a_404(
    open_producer: tuple[FastAPI, Store], event_id: str
) -> None:
    """PostgreSQL refuses a NUL in text: GET /events/%00 was a 500 there."""
    got = call(open_producer[0], "GET", f"/events/{event_id}")
    assert got.status_code == 404, got.text
