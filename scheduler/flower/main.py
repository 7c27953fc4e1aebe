"""Entry point: ``carousel-flower`` — Celery's Flower with basic auth, on our broker."""

from __future__ import annotations

import logging
import sys

from scheduler.flower.settings import FlowerSettings
from scheduler.worker.app import create_celery


def _no_reply_is_not_a_failure(record: logging.LogRecord) -> bool:
    """Flower asks the workers for their details at start and on refresh, and warns
    "Inspect method ... failed" when no worker answered — which is simply the case until
    the first worker is up (``make up`` starts Flower with the rest). Drop that one;
    keep the warning for a broker connection error."""
    return record.msg != "Inspect method %s failed"


def flower_argv(settings: FlowerSettings, extra: list[str]) -> list[str]:
    """Flower's command line from the settings, then ``extra`` (which may override them).
    Retired elastic workers leave Flower's worker list ``FLOWER_PURGE_OFFLINE_WORKERS``
    seconds after going offline (Flower's default keeps them listed, Offline, for good)."""
    purge = settings.flower_purge_offline_workers
    return [
        "flower",
        f"--port={settings.flower_port}",
        f"--address={settings.flower_address}",
        f"--basic-auth={settings.flower_basic_auth}",
        *([f"--purge_offline_workers={purge}"] if purge else []),
        *extra,
    ]


def main(argv: list[str] | None = None) -> None:
    settings = FlowerSettings()
    logging.getLogger("flower.inspector").addFilter(_no_reply_is_not_a_failure)
    app = create_celery(settings)
    app.start(flower_argv(settings, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
