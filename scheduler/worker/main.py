"""Entry point: ``carousel-worker [extra celery worker options]``.

A worker logs one line when it is ready (name, pool, concurrency, queue, driver, broker),
not Celery's banner nor its "Connected to" and "ready." lines; and no warning in a
healthy run: Celery's warning about running as root guards against pickled task
messages, which this app never accepts (JSON only), so it is muted — the ready line
still says "as root", and the image runs workers as an unprivileged user anyway. A
remote shutdown (how the elasticity worker retires an idle worker) is logged as what
it is, a deliberate stop, not a warning.

Bad settings stop the worker at start with one line saying what to fix: a setting out
of range, a ``DRIVER`` no installed package registers (the line lists those that are),
or a driver refusing its own settings (:func:`scheduler.worker.drivers.check`)."""

from __future__ import annotations

import logging
import os
import sys
import uuid
import warnings
from typing import Any

from celery import signals
from celery.platforms import SecurityWarning
from pydantic import ValidationError

from scheduler.celery_app import create_celery
from scheduler.worker import drivers
from scheduler.worker.errors import DriverMisconfigured
from scheduler.worker.settings import WorkerSettings
from scheduler.worker.task import register_tasks
from shared.plugins import PluginError
from shared.settings import explain_settings

log = logging.getLogger("scheduler.worker")


class StartupLines(logging.Filter):
    """On Celery's worker loggers: drop the start-up lines the ready line replaces —
    "Connected to <broker>" until the worker is ready (a reconnect later is still
    logged) and "<name> ready." — keeping the broker's address for the ready line."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.broker: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "%s ready.":
            return False
        if record.msg == "Connected to %s" and not self.ready:
            self.broker = str(record.args[0]) if isinstance(record.args, tuple) else None
            return False
        return True


def remote_shutdown_is_no_warning(record: logging.LogRecord) -> bool:
    """On ``celery.worker.control``: Celery logs a remote shutdown command as a WARNING;
    it is a deliberate stop (the elasticity worker retiring an idle worker, or an
    operator), so it is logged at INFO, saying where it came from."""
    if record.funcName == "shutdown" and record.levelno == logging.WARNING:
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.msg, record.args = "shutdown asked remotely: %s", (record.getMessage(),)
    return True


def checked_settings() -> WorkerSettings:
    """The worker's settings, its driver built once to check its own: exits with one
    line saying what to fix if either is wrong."""
    try:
        settings = WorkerSettings()
        drivers.check(settings)
    except ValidationError as exc:
        sys.exit(f"carousel-worker: refusing to start: {explain_settings(exc)}")
    except (PluginError, DriverMisconfigured) as exc:
        sys.exit(f"carousel-worker: refusing to start: DRIVER={settings.driver}: {exc}")
    return settings


def main(argv: list[str] | None = None) -> None:
    settings = checked_settings()
    # the cloud drivers poll their operations: one INFO line per request is noise
    logging.getLogger("httpx").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=SecurityWarning)
    app = create_celery(settings)
    runtime = register_tasks(app, settings)
    # once logging is set up and before the pool starts
    signals.celeryd_after_setup.connect(lambda **_: runtime.migrate(), weak=False)
    name = settings.worker_name or f"carousel-{uuid.uuid4().hex[:8]}@%h"
    queue = settings.topology.actions_queue_of(settings.worker_profile).name
    startup = StartupLines()

    def ready(sender: Any = None, **_: Any) -> None:
        startup.ready = True
        who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        log.info(
            "worker %s ready: %s pool, concurrency %d, queue %s, driver %s (as %s), broker %s",
            sender.hostname if sender is not None else name,
            settings.worker_pool,
            settings.worker_concurrency,
            queue,
            settings.driver,
            who,
            startup.broker or app.connection_for_read().as_uri(),
        )

    signals.worker_ready.connect(ready, weak=False)
    logging.getLogger("celery.apps.worker").addFilter(startup)
    logging.getLogger("celery.worker.consumer.connection").addFilter(startup)
    logging.getLogger("celery.worker.control").addFilter(remote_shutdown_is_no_warning)
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
