"""Entry point: ``carousel-producer``."""

from __future__ import annotations

import logging

import uvicorn

from producer.api import create_app
from producer.settings import ProducerSettings


def main() -> None:
    settings = ProducerSettings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # the monitoring long-polls its source: one INFO line per request is noise
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run(
        create_app(settings),
        host=settings.producer_host,
        port=settings.producer_port,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
