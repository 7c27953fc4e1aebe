"""Running one dispatched event, exactly once in effect.

The ledger's claim decides: only the task message that claims the event runs the
driver; a redelivered message whose action already finished only re-announces the
completion (so the dispatcher frees the slot even if the first announcement was lost).
The claim is a lease with a fencing token, timed by the ledger's clock: a
:class:`~scheduler.worker.renewal.LeaseKeeper` renews it while the action runs and until
its outcome is recorded; if this worker stops renewing (it died, or
lost the ledger), another task message may take the event over with a larger token, and
this worker's late outcome is refused. A holder that learns its claim is over stops its
driver (:class:`~scheduler.worker.hold.Hold`) and records nothing.

An action whose outcome the driver could not learn (:class:`OutcomeUnknown`: the cloud
may still be working on it), like one past its time limit, ends ``failed`` and
dead-lettered, for an operator to look at; the VM stays held until then, as the event
stays running. A success the driver learnt late is recorded with its note (the event's
``error`` column, which then says how the outcome was learnt, not what went wrong).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from scheduler.worker.driver import Driver
from scheduler.worker.errors import ActionFailed, ClaimLost, OutcomeUnknown
from scheduler.worker.hold import Hold
from scheduler.worker.renewal import LeaseKeeper
from shared.backoff import Backoff
from shared.models import Status, VmEventMessage
from shared.store import Claim, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    claim: Claim
    #: how the event ended as this task message reports it (SUCCEEDED or FAILED; FAILED
    #: too for an event the ledger does not show dispatched), or None: another message
    #: holds the event
    finished: Status | None
    #: why the event was dead-lettered (out of attempts or time, outcome unknown), else None
    dead: str | None = None
    #: the event as run (the ledger's copy when this message claimed it)
    event: VmEventMessage | None = None
    #: CLAIMED: which attempt this was, what the driver said, how long the action took
    attempt: int = 0
    error: str | None = None
    seconds: float | None = None
    #: a success's note: how its outcome was learnt (late, after the cloud came back)
    note: str | None = None

    def result(self) -> dict[str, Any]:
        """The task's result, as Flower shows it (JSON): what this task message did
        (``outcome``), and the event's status as this message left it — ``succeeded`` or
        ``failed`` once finished, ``running`` while another task message holds it (a
        duplicate skipped, or this run taken over), ``unknown`` when the ledger has no
        dispatched event of that id."""
        event = self.event
        done = {
            Claim.CLAIMED: "ran the action",
            Claim.FINISHED: "already finished: announced again, not run again",
            Claim.HELD: "skipped: another task message is running it",
            Claim.UNKNOWN: "skipped: not dispatched in the ledger",
            Claim.EXHAUSTED: "not run: out of attempts",
        }[self.claim]
        if self.claim is Claim.UNKNOWN:
            status = "unknown"  # reported FAILED, but the ledger has no such dispatched event
        elif self.finished is None:
            status = Status.RUNNING.value
        else:
            status = self.finished.value
        if self.claim is Claim.CLAIMED and self.finished is None:
            done = "ran the action, then was taken over: its outcome is not recorded"
        out: dict[str, Any] = {"outcome": done, "status": status}
        if event is not None:
            out.update(event_id=event.id, action=event.action.value, host=event.host, vm=event.vm)
        if self.claim is Claim.CLAIMED:
            out.update(attempt=self.attempt, seconds=self.seconds)
        if self.error or self.dead:
            out["error"] = self.dead or self.error
        if self.note:
            out["note"] = self.note
        return out

    def failure(self) -> str | None:
        """Why the event failed, when this task message leaves it ``failed`` (it ran and
        failed, ran out of attempts, or found it finished failed): the task then ends in
        Celery's FAILURE state with this reason. None otherwise — also for a message that
        skipped the event (``running``) or found none (``unknown``): not failures of it."""
        if self.claim is Claim.UNKNOWN or self.finished is not Status.FAILED:
            return None
        return self.dead or self.error or "the event ended failed"


def run_event(
    event: VmEventMessage,
    dispatch_id: str,
    worker: str,
    store: Store,
    driver: Driver,
    max_attempts: int | None = None,
    lease_seconds: float = 30.0,
) -> Outcome:
    """Claim ``event`` in ``store`` and, if this task message wins the claim, run the
    ledger's copy of it through ``driver`` and record the outcome."""
    extra = {"event_id": event.id, "host": event.host, "vm": event.vm, "policy": event.policy}
    claimed_at = time.monotonic()
    result = store.claim(event.id, dispatch_id, worker, lease_seconds, max_attempts)
    claim = result.outcome
    if claim is Claim.EXHAUSTED:
        reason = f"gave up after {max_attempts} attempts"
        log.error("event %s %s; it ends failed", event.id, reason, extra=extra)
        return Outcome(claim, Status.FAILED, dead=reason, event=event)
    if claim is Claim.HELD:
        log.info(
            "event %s is being run by another task message; skipping (if that holder "
            "dies, the dispatcher's sweeper sends the event again once its claim expires)",
            event.id,
            extra=extra,
        )
        return Outcome(claim, None, event=event)
    if claim is Claim.FINISHED:
        row = store.get(event.id) or {}
        ok = row.get("status") == Status.SUCCEEDED
        log.info(
            "event %s already finished (%s); no second effect",
            event.id,
            row.get("status"),
            extra=extra,
        )
        # a success's error column is its note (how its outcome was learnt), not an error
        error = None if ok else row.get("error")
        return Outcome(claim, _ended(ok), event=event, error=error)
    if claim is Claim.UNKNOWN:
        log.error(
            "event %s is not in the ledger as dispatched; freeing its slot", event.id, extra=extra
        )
        return Outcome(claim, Status.FAILED, event=event)

    stored = result.event
    if stored is not None and stored != event:
        log.warning(
            "the task message of event %s differs from the ledger; running the ledger's",
            event.id,
            extra=extra,
        )
        event = stored
    hold = Hold(result.token)
    with LeaseKeeper(store, event.id, hold, lease_seconds, claimed_at) as keeper:
        began = time.monotonic()  # for the task's result only: the ledger keeps its own
        try:
            error, dead, note = _execute(driver, event, hold, extra)
        except ClaimLost as exc:
            log.error(
                "event %s: the claim is over (%s); its action stopped and its outcome is "
                "not recorded: the event's next holder runs it",
                event.id,
                exc,
                extra=extra,
            )
            seconds = round(time.monotonic() - began, 3)
            return Outcome(claim, None, None, event, result.attempt, str(exc), seconds)
        seconds = round(time.monotonic() - began, 3)
        # The action has had its effect: record it here, retrying in place, and keep the
        # claim meanwhile. Raising would make Celery retry the task, whose claim would
        # run the action a second time.
        keeper.finishing = True
        recorded = _persist(
            lambda: store.finish(
                event.id, result.token, error is None, note if error is None else error, dead
            ),
            f"record the outcome of event {event.id}",
        )
    if not recorded:
        log.error(
            "event %s: another worker took the event over (claim %d expired); the outcome "
            "of this run (%s) is not recorded, the new holder's will be",
            event.id,
            result.token,
            error or "succeeded",
            extra=extra,
        )
        return Outcome(claim, None, None, event, result.attempt, error, seconds)
    log.info(
        "event %s %s %s",
        event.id,
        event.action,
        ("succeeded" + (f" ({note})" if note else "")) if error is None else f"failed: {error}",
        extra=extra,
    )
    return Outcome(
        claim,
        _ended(error is None),
        error if dead else None,
        event,
        result.attempt,
        error,
        seconds,
        note,
    )


def _ended(ok: bool) -> Status:
    return Status.SUCCEEDED if ok else Status.FAILED


def _execute(
    driver: Driver, event: VmEventMessage, hold: Hold, extra: dict[str, str]
) -> tuple[str | None, bool, str | None]:
    """Run the action: (the error, or None on success; whether the event is to be
    dead-lettered — it ran out of time, or its outcome is unknown; the success's note).
    :class:`ClaimLost` propagates."""
    try:
        note = driver.execute(event, hold)
    except ClaimLost:
        raise
    except OutcomeUnknown as exc:
        log.error("event %s: %s; it ends failed", event.id, exc, extra=extra)
        return str(exc), True, None
    except ActionFailed as exc:
        return str(exc), False, None
    except SoftTimeLimitExceeded:
        log.error("event %s ran past its time limit; it ends failed", event.id, extra=extra)
        return "ran past its time limit (ACTION_TIME_LIMIT): its outcome is unknown", True, None
    except Exception as exc:  # a driver bug must still end the event, not wedge the slot
        log.exception("driver crashed on event %s", event.id, extra=extra)
        return f"driver error: {exc!r}", False, None
    return None, False, note


def _persist(
    write: Callable[[], bool], what: str, sleep: Callable[[float], None] = time.sleep
) -> bool:
    """Retry a ledger write with capped backoff until it goes through. The action has
    had its effect: giving up would hand the task back to Celery, whose retry would
    claim the event again and run the action a second time. Returns what ``write``
    returned."""
    backoff = Backoff(first=0.1, cap=5.0)
    while True:
        try:
            return write()
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
