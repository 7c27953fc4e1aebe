"""Entry point: ``carousel-producer``."""

from __future__ import annotations

import importlib.util
import logging

import uvicorn

from producer.settings import ProducerSettings


def configure_logging(settings: ProducerSettings) -> None:
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # the monitoring long-polls its source: one INFO line per request is noise
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main() -> None:
    settings = ProducerSettings()
    configure_logging(settings)
    # PRODUCER_PROCESSES workers share the port; each builds its app from the
    # environment (producer.api:app_factory), as does the single process
    uvicorn.run(
        "producer.api:app_factory",
        factory=True,
        workers=settings.producer_processes if settings.producer_processes > 1 else None,
        host=settings.producer_host,
        port=settings.producer_port,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        # C event loop and HTTP parser when installed (they are dependencies)
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
    )


if __name__ == "__main__":
    main()
