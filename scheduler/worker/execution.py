"""Running one dispatched event, exactly once in effect.

The ledger's claim decides: only the task message that claims the event runs the
driver; a redelivered message whose action already finished only re-announces the
completion (so the scheduler frees the slot even if the first announcement was lost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.worker.drivers import Driver
from scheduler.worker.errors import ActionFailed
from shared.backoff import Backoff
from shared.models import Completion, Status, VmEventMessage
from shared.store import Claim, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    claim: Claim
    #: what to announce to the scheduler, or None (another message holds the event)
    completion: Completion | None


def run_event(
    event: VmEventMessage,
    dispatch_id: str,
    worker: str,
    store: Store,
    driver: Driver,
    clock: Callable[[], float],
    max_attempts: int | None = None,
) -> Outcome:
    extra = {"event_id": event.id, "host": event.host, "vm": event.vm, "policy": event.policy}
    claim = store.claim(event.id, dispatch_id, worker, clock(), max_attempts)
    if claim is Claim.EXHAUSTED:
        log.error(
            "event %s gave up after %s attempts; it ends failed",
            event.id,
            max_attempts,
            extra=extra,
        )
        return Outcome(claim, Completion.of(event, ok=False))
    if claim is Claim.HELD:
        log.info("event %s is being run by another task message; skipping", event.id, extra=extra)
        return Outcome(claim, None)
    if claim is Claim.FINISHED:
        status = store.status_of(event.id)
        log.info("event %s already finished (%s); no second effect", event.id, status, extra=extra)
        return Outcome(claim, Completion.of(event, status is Status.SUCCEEDED))
    if claim is Claim.UNKNOWN:
        log.error(
            "event %s is not in the ledger as dispatched; freeing its slot", event.id, extra=extra
        )
        return Outcome(claim, Completion.of(event, ok=False))

    stored = store.event(event.id)
    if stored is not None and stored != event:
        log.warning(
            "the task message of event %s differs from the ledger; running the ledger's",
            event.id,
            extra=extra,
        )
        event = stored
    error: str | None = None
    try:
        driver.execute(event)
    except ActionFailed as exc:
        error = str(exc)
    except Exception as exc:  # a driver bug must still end the event, not wedge the slot
        log.exception("driver crashed on event %s", event.id, extra=extra)
        error = f"driver error: {exc!r}"
    # The action has had its effect: record it here, retrying in place. Raising would
    # make Celery retry the task, whose re-claim would run the action a second time.
    _persist(
        lambda: store.finish(event.id, dispatch_id, error is None, error, clock()),
        f"record the outcome of event {event.id}",
    )
    log.info(
        "event %s %s %s",
        event.id,
        event.action,
        "succeeded" if error is None else f"failed: {error}",
        extra=extra,
    )
    return Outcome(claim, Completion.of(event, error is None))


def _persist(
    write: Callable[[], object], what: str, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Retry a ledger write with capped backoff until it goes through. The action has
    had its effect: giving up would hand the task back to Celery, whose retry would
    claim the event again and run the action a second time."""
    backoff = Backoff(first=0.1, cap=5.0)
    while True:
        try:
            write()
            return
        except Exception:
            delay = backoff.next()
            log.warning(
                "could not %s (for %.0f s now); retrying in %.1f s",
                what,
                backoff.waited - delay,
                delay,
                exc_info=True,
            )
            sleep(delay)
