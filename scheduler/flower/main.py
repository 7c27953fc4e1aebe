"""Entry point: ``carousel-flower`` — Celery's Flower with basic auth, on our broker."""

from __future__ import annotations

import sys

from scheduler.flower.settings import FlowerSettings
from scheduler.worker.app import create_celery


def main(argv: list[str] | None = None) -> None:
    settings = FlowerSettings()
    app = create_celery(settings)
    app.start(
        [
            "flower",
            f"--port={settings.flower_port}",
            f"--address={settings.flower_address}",
            f"--basic-auth={settings.flower_basic_auth}",
            *(
                [f"--purge_offline_workers={settings.flower_purge_offline_workers}"]
                if settings.flower_purge_offline_workers
                else []
            ),
            *(sys.argv[1:] if argv is None else argv),
        ]
    )


if __name__ == "__main__":
    main()
