"""``/docs`` served by the service itself, for machines without internet: FastAPI's
default page loads Swagger UI from a CDN and is blank offline. Here the page's script,
stylesheet and icon come from the ``swagger-ui-bundle`` package, mounted under
``/docs/assets``; ReDoc, which no package ships, is off. Every Carousel app (and
simcloud) is made by :func:`service_app`."""

from __future__ import annotations

from typing import Any

import swagger_ui_bundle  # type: ignore[import-untyped]
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"


def service_app(**options: Any) -> FastAPI:
    """A FastAPI app (``options`` as for FastAPI) whose ``/docs`` needs no internet."""
    app = FastAPI(docs_url=None, redoc_url=None, **options)
    app.mount(ASSETS_URL, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), "docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
        )

    return app
