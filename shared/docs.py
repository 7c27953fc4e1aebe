"""``/docs`` and ``/redoc`` served by the service itself, for machines without internet:
FastAPI's default pages load Swagger UI and ReDoc from a CDN and are blank offline. Here
the pages' scripts, stylesheet and icon come from the ``fastapi-offline`` package (Swagger
UI 5, which renders OpenAPI 3.1 as FastAPI writes it, and ReDoc), mounted under
``/docs/assets``. Every Carousel app (and simcloud) is made by :func:`service_app`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
#: the package's own copy of the assets (only its files are used, not its app factory)
ASSETS = Path(fastapi_offline.__file__).parent / "static"


def service_app(**options: Any) -> FastAPI:
    """A FastAPI app (``options`` as for FastAPI) whose docs need no internet."""
    app = FastAPI(docs_url=None, redoc_url=None, **options)
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), "docs-assets")
    title = f"{app.title} — API"

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    return app
