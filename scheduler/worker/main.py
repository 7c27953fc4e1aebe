"""Entry point: ``carousel-worker [extra celery worker options]``.

A worker logs one line when it is ready (name, pool, concurrency, queue), not Celery's
banner; and no warning in a healthy run: Celery's warning about running as root guards
against pickled task messages, which this app never accepts (JSON only), so it is
muted — the image runs workers as an unprivileged user anyway."""

from __future__ import annotations

import logging
import os
import sys
import uuid
import warnings
from typing import Any

from celery import signals
from celery.platforms import SecurityWarning

from scheduler.worker.app import create_celery, register_tasks
from scheduler.worker.settings import WorkerSettings

log = logging.getLogger("scheduler.worker")


def main(argv: list[str] | None = None) -> None:
    settings = WorkerSettings()
    # the cloud drivers poll their operations: one INFO line per request is noise
    logging.getLogger("httpx").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=SecurityWarning)
    app = create_celery(settings)
    register_tasks(app, settings)
    name = settings.worker_name or f"carousel-{uuid.uuid4().hex[:8]}@%h"
    queue = settings.topology.actions_queue_of(settings.worker_profile).name

    def ready(sender: Any = None, **_: Any) -> None:
        who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        log.info(
            "worker %s ready: %s pool, concurrency %d, queue %s, driver %s (as %s)",
            sender.hostname if sender is not None else name,
            settings.worker_pool,
            settings.worker_concurrency,
            queue,
            settings.driver,
            who,
        )

    signals.worker_ready.connect(ready, weak=False)
    # ...instead of Celery's own "<name> ready." line, which says less
    logging.getLogger("celery.apps.worker").addFilter(lambda r: r.msg != "%s ready.")
    app.worker_main(
        [
            "--quiet",  # no banner: the line above says what matters
            "worker",
            "-Q",
            queue,
            "-n",
            name,
            "-c",
            str(settings.worker_concurrency),
            "-P",
            settings.worker_pool,
            "-E",
            # mingle syncs revoked task ids between workers at start: Carousel revokes none
            "--without-mingle",
            "--loglevel",
            settings.log_level,
            *(sys.argv[1:] if argv is None else argv),
        ]
    )


if __name__ == "__main__":
    main()
