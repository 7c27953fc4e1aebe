"""Entry point: ``carousel-worker [extra celery worker options]``."""

from __future__ import annotations

import logging
import sys
import uuid

from scheduler.worker.app import create_celery, register_tasks
from scheduler.worker.settings import WorkerSettings


def main(argv: list[str] | None = None) -> None:
    settings = WorkerSettings()
    # the cloud drivers poll their operations: one INFO line per request is noise
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_celery(settings)
    register_tasks(app, settings)
    name = settings.worker_name or f"carousel-{uuid.uuid4().hex[:8]}@%h"
    app.worker_main(
        [
            "worker",
            "-Q",
            settings.topology.actions_queue_of(settings.worker_profile).name,
            "-n",
            name,
            "-c",
            str(settings.worker_concurrency),
            "-P",
            settings.worker_pool,
            "-E",
            "--loglevel",
            settings.log_level,
            *(sys.argv[1:] if argv is None else argv),
        ]
    )


if __name__ == "__main__":
    main()
