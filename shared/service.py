"""How a Carousel service starts its process: one log format for all, and its HTTP API
served by uvicorn at the log level and with the access log its settings say."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from shared.settings import CommonSettings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(settings: CommonSettings) -> None:
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)


def serve(app: Any, host: str, port: int, settings: CommonSettings, **options: Any) -> None:
    """Serve ``app`` (an ASGI app, or an import string with ``factory=True``) until the
    process is told to stop; ``options`` go to uvicorn as they are."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        **options,
    )
