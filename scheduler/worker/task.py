"""Carousel's one task, registered on the shared Celery app
(:func:`scheduler.celery_app.create_celery`), and the runtime its processes share.

The task is thin: decode, :func:`scheduler.worker.execution.run_event`, report. An event
that ended ``failed`` ends the task in Celery's FAILURE state (:class:`EventFailed`, the
reason as its message); any other outcome is its result. Either way the task's end event
(task-succeeded or task-failed) is the completion the dispatcher waits for.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import sqlalchemy as sa
from celery import Celery, Task

from scheduler.celery_app import TASK_NAME
from scheduler.worker.driver import Driver
from scheduler.worker.drivers import build_driver
from scheduler.worker.errors import EventFailed
from scheduler.worker.execution import run_event
from scheduler.worker.poison import PoisonArguments, dead_letter, install, parse_arguments
from scheduler.worker.settings import WorkerSettings
from shared.store import Store

#: seconds between an action's soft time limit (it is interrupted) and its hard one
#: (its process is killed)
HARD_LIMIT_GRACE = 30.0
log = logging.getLogger(__name__)


class Runtime:
    """The store and driver of one worker process (built after fork, on first use)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._pid = 0
        self._store: Store | None = None
        self._driver: Driver | None = None
        #: the main process brought the ledger to the newest migration before the pool
        #: started: a pool process need not (loading the migrations cost each about
        #: half a second of CPU)
        self.migrated = False

    def migrate(self) -> None:
        """In the main process, before the pool starts: migrate the ledger once. If it
        cannot be reached now, each pool process migrates on first use instead."""
        try:
            Store.connect(
                self.settings.carousel_db_url, pool=self.settings.db_pool
            ).engine.dispose()
        except sa.exc.DBAPIError as exc:
            log.warning(
                "the ledger is unreachable at start (%s): will retry on first use", exc.orig
            )
            return
        self.migrated = True

    def get(self) -> tuple[Store, Driver]:
        if self._pid != os.getpid() or self._store is None or self._driver is None:
            # claim and finish, two commits per event, are not fsynced one by one: a
            # power cut may roll one back, which repeats or strands that action but
            # loses no event (the producer's and the dispatcher's commits are durable)
            self._store = Store.connect(
                self.settings.carousel_db_url,
                durable=False,
                pool=self.settings.db_pool,
                migrate=not self.migrated,
            )
            self._driver = build_driver(self.settings)
            self._pid = os.getpid()
        return self._store, self._driver


def register_tasks(app: Celery, settings: WorkerSettings) -> Runtime:
    """Register Carousel's task on ``app``; returns the runtime its processes share."""
    runtime = Runtime(settings)
    install(app, settings.topology.dead_letter_queue)

    # Driver failures end the event (run_event catches them), and the task with
    # EventFailed once the ledger holds the outcome: expected (logged without a
    # traceback), acked, never retried. What else escapes is the ledger or the broker
    # failing: retry with backoff, forever — the claim makes a rerun safe, and giving up
    # would leave the event's slot taken for good.
    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        acks_on_failure=True,
        reject_on_worker_lost=True,
        throws=(EventFailed,),
        autoretry_for=(Exception,),
        dont_autoretry_for=(PoisonArguments, EventFailed),
        retry_backoff=0.5,
        retry_backoff_max=30,
        retry_jitter=True,
        max_retries=None,
        soft_time_limit=settings.action_time_limit,
        time_limit=settings.action_time_limit + HARD_LIMIT_GRACE,
    )
    def execute(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            message, dispatch_id = parse_arguments(args, kwargs)
        except PoisonArguments as exc:
            dead_letter(app, {"args": args, "kwargs": kwargs}, str(exc))
            return {"outcome": "dead-lettered: not a task of Carousel's", "error": str(exc)}
        store, driver = runtime.get()
        outcome = run_event(
            message,
            dispatch_id,
            self.request.hostname or "?",
            store,
            driver,
            settings.max_attempts,
            settings.claim_lease_seconds,
        )
        if outcome.dead is not None:  # a copy for whoever watches the dead-letter queue
            dead_letter(app, message.model_dump(mode="json"), outcome.dead)
        reason = outcome.failure()
        if reason is not None:  # FAILURE in Flower, the reason as the exception's message
            raise EventFailed(reason)
        # what Flower shows as the task's result (task_ignore_result: nothing stores it);
        # the task-succeeded event that carries it is also the dispatcher's completion
        return outcome.result()

    return runtime
