"""The operations endpoints every HTTP service serves (shared.http), tried over HTTP."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge

from shared.http import ops_router
from tests.asgi import get


def _app(ready_reason: str | None, asynchronous: bool) -> tuple[FastAPI, Gauge]:
    registry = CollectorRegistry()
    gauge = Gauge("carousel_test_value", "a value", registry=registry)
    refreshed: list[int] = []

    def refresh() -> None:
        refreshed.append(1)
        gauge.set(len(refreshed))

    def ready_sync() -> str | None:
        return ready_reason

    async def ready_async() -> str | None:
        return ready_reason

    app = FastAPI()
    app.include_router(ops_router(ready_async if asynchronous else ready_sync, registry, refresh))
    return app, gauge


def test_healthz_answers_while_the_process_lives() -> None:
    app, _ = _app("broker gone", asynchronous=False)
    assert get(app, "/healthz").json() == {"status": "ok"}


def test_readyz_says_ready_or_why_not_sync_and_async() -> None:
    for asynchronous in (False, True):
        ok = get(_app(None, asynchronous)[0], "/readyz")
        assert (ok.status_code, ok.json()) == (200, {"status": "ready"})
        not_ok = get(_app("not connected", asynchronous)[0], "/readyz")
        assert (not_ok.status_code, not_ok.json()) == (503, {"status": "not connected"})


def test_metrics_are_refreshed_before_each_scrape() -> None:
    app, _ = _app(None, asynchronous=False)
    get(app, "/metrics")
    body = get(app, "/metrics")
    assert body.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "carousel_test_value 2.0" in body.text
