"""``/docs`` and ``/redoc`` work without internet on every service: each page names only
its own assets, each served by the service itself, and the pages are open (no token)
while the API they document is still described at ``/openapi.json``; the Swagger UI
served is one that renders the OpenAPI version FastAPI writes (3.1 needs Swagger UI 5:
4.x shows "Unable to render this definition")."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI

from producer.api import create_app as producer_app
from producer.settings import ProducerSettings
from scheduler.dispatcher.admin import create_admin_app as dispatcher_app
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.state import DispatcherState
from scheduler.elasticity.admin import create_admin_app as elasticity_app
from shared.docs import ASSETS
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
        "dispatcher": dispatcher_app(state, FakeSession(), token=TOKEN, views_open=False),
        "elasticity": elasticity_app(elasticity_engine()[0], False, views_token=TOKEN),
        "simcloud": simcloud_app(Cloud(), token=TOKEN),
    }


@pytest.fixture(params=["producer", "dispatcher", "elasticity", "simcloud"])
def app(request: pytest.FixtureRequest) -> FastAPI:
    return _apps()[request.param]


@pytest.mark.parametrize("page_url", ["/docs", "/redoc"])
def test_the_docs_pages_name_only_their_own_assets_and_each_is_served(
    app: FastAPI, page_url: str
) -> None:
    page = get(app, page_url)
    assert page.status_code == 200, "the docs page is open, with or without a token"
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert len(links) >= 2, links
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
    assert not any(path.startswith(("/docs", "/redoc")) for path in spec["paths"])


def test_the_swagger_ui_served_renders_the_openapi_version_fastapi_writes() -> None:
    spec_version = _apps()["producer"].openapi()["openapi"]
    bundle = (ASSETS / "swagger-ui-bundle.js").read_text(errors="replace")
    found = re.search(r'PACKAGE_VERSION:"(\d+)\.\d+\.\d+"', bundle)
    assert found, "the bundle does not say which Swagger UI it is"
    if spec_version.startswith("3.1"):
        assert int(found.group(1)) >= 5, f"OpenAPI {spec_version} needs Swagger UI 5"
