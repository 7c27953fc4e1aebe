"""Entry point: ``carousel-producer``."""

from __future__ import annotations

import importlib.util
import logging

from producer.settings import ProducerSettings
from shared import service


def configure_logging(settings: ProducerSettings) -> None:
    service.configure_logging(settings)
    # the monitoring long-polls its source: one INFO line per request is noise
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main() -> None:
    settings = ProducerSettings()
    configure_logging(settings)
    # PRODUCER_PROCESSES workers share the port; each builds its app from the
    # environment (producer.api:app_factory), as does the single process
    service.serve(
        "producer.api:app_factory",
        settings.producer_host,
        settings.producer_port,
        settings,
        factory=True,
        workers=settings.producer_processes if settings.producer_processes > 1 else None,
        # C event loop and HTTP parser when installed (they are dependencies)
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
    )


if __name__ == "__main__":
    main()
