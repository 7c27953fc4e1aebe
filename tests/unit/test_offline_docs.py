"""``/docs`` works without internet on every service: the page names only its own
assets, each served by the service itself, and the page is open (no token) while the
API it documents is still described at ``/openapi.json``."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI

from producer.api import create_app as producer_app
from producer.settings import ProducerSettings
from scheduler.dispatcher.admin import create_admin_app as scheduler_app
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.state import DispatcherState
from scheduler.elasticity.admin import create_admin_app as elasticity_app
from simcloud.app import create_app as simcloud_app
from simcloud.model import Cloud
from tests.asgi import get
from tests.unit.admin_doubles import FakeSession
from tests.unit.test_elasticity_admin import make as elasticity_engine

TOKEN = "s3cret-token"


def _apps() -> dict[str, FastAPI]:
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(5, 1, 0)))
    return {
        "producer": producer_app(ProducerSettings(carousel_api_token=TOKEN)),
        "scheduler": scheduler_app(state, FakeSession(), token=TOKEN, views_open=False),
        "elasticity": elasticity_app(elasticity_engine()[0], False, views_token=TOKEN),
        "simcloud": simcloud_app(Cloud(), token=TOKEN),
    }


@pytest.fixture(params=["producer", "scheduler", "elasticity", "simcloud"])
def app(request: pytest.FixtureRequest) -> FastAPI:
    return _apps()[request.param]


def test_the_docs_page_names_only_its_own_assets_and_each_is_served(app: FastAPI) -> None:
    page = get(app, "/docs")
    assert page.status_code == 200, "the docs page is open, with or without a token"
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert len(links) >= 3, links
    for link in links:
        assert link.startswith("/docs/assets/"), f"{link} is not served by the service"
        asset = get(app, link)
        assert asset.status_code == 200, link
        kind = asset.headers["content-type"]
        wanted = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
        assert wanted[link[link.rindex(".") :]] in kind, (link, kind)
    assert "cdn" not in page.text.lower()


def test_the_api_is_still_described_and_the_docs_are_not_part_of_it(app: FastAPI) -> None:
    spec = get(app, "/openapi.json").json()
    assert spec["paths"]
    assert not any(path.startswith("/docs") for path in spec["paths"])
    # ReDoc needs a CDN: it is off (simcloud guards unknown paths: 401 before 404)
    assert get(app, "/redoc").status_code in (401, 404)
