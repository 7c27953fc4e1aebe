"""Tests for scheduler.worker.execution.run_event with a real ledger and an in-memory driver."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery.exceptions import SoftTimeLimitExceeded

from harness.processes import wait_until
from scheduler.worker.errors import ActionFailed, ClaimLost, OutcomeUnknown
from scheduler.worker.execution import run_event
from scheduler.worker.hold import Hold
from shared.models import Action, Status, VmEventMessage
from shared.store import Claim, Store
from tests.ledgers import accept, pass_time

#: seconds a claim lasts in these tests
LEASE = 30.0


class RecordingDriver:
    """Records every event it is asked to run; optionally fails with ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[VmEventMessage] = []
        self.tokens: list[int] = []
        self.error = error

    def execute(self, event: VmEventMessage, hold: Hold) -> None:
        self.calls.append(event)
        self.tokens.append(hold.token)
        if self.error is not None:
            raise self.error


def ev(event_id: str = "e1") -> VmEventMessage:
    return VmEventMessage(
        id=event_id,
        host="compute-1",
        vm="vm-17",
        policy="auto-healing",
        action=Action.HEAL,
        payload={"k": "v"},
        accepted_at=1.0,
    )


@pytest.fixture
def store(ledger_url: str) -> Iterator[Store]:
    """The worker's ledger: SQLite, then PostgreSQL (the ledger_url fixture)."""
    store = Store.connect(ledger_url)
    yield store
    store.engine.dispose()


def dispatch(store: Store, event: VmEventMessage) -> None:
    accept(store, [event])
    store.confirm([event])
    assert store.mark_dispatched_many([event.id], "dispatcher-side")[event.id] is Status.QUEUED


def test_claimed_event_runs_once_and_succeeds(store: Store) -> None:
    event = ev()
    dispatch(store, event)
    driver = RecordingDriver()
    outcome = run_event(event, "d1", "worker-1", store, driver)
    assert outcome.claim is Claim.CLAIMED
    assert outcome.finished is Status.SUCCEEDED
    assert driver.calls == [event]
    row = store.get(event.id)
    assert row is not None
    assert row["status"] == Status.SUCCEEDED
    assert row["error"] is None
    assert row["worker"] == "worker-1"
    assert row["attempts"] == 1
    assert row["started_at"] <= row["finished_at"] <= store.now()  # the ledger's clock


@pytest.mark.parametrize(
    ("error", "stored"),
    [
        pytest.param(ActionFailed("no capacity on target host"), "no capacity on target host"),
        pytest.param(ActionFailed(""), "", id="empty-reason"),
    ],
)
def test_action_failed_ends_failed_with_its_text(
    store: Store, error: Exception, stored: str
) -> None:
    event = ev()
    dispatch(store, event)
    driver = RecordingDriver(error)
    outcome = run_event(event, "d1", "worker-1", store, driver)
    assert outcome.claim is Claim.CLAIMED
    assert outcome.finished is Status.FAILED
    assert len(driver.calls) == 1
    row = store.get(event.id)
    assert row is not None
    assert row["status"] == Status.FAILED
    assert row["error"] == stored


@pytest.mark.parametrize(
    "error",
    [RuntimeError("kaboom"), KeyError("simulate"), ZeroDivisionError()],
    ids=["runtime", "keyerror", "zerodiv"],
)
def test_driver_crash_ends_failed_as_driver_error(
    store: Store,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    event = ev()
    dispatch(store, event)
    with caplog.at_level(logging.ERROR, logger="scheduler.worker.execution"):
        outcome = run_event(event, "d1", "worker-1", store, RecordingDriver(error))
    assert outcome.finished is Status.FAILED
    row = store.get(event.id)
    assert row is not None
    assert row["status"] == Status.FAILED
    assert row["error"].startswith("driver error")
    assert repr(error) in row["error"]
    assert any(r.exc_info for r in caplog.records)  # the crash is logged with its traceback


@pytest.mark.parametrize(
    ("first_error", "status"),
    [(None, "succeeded"), (ActionFailed("nope"), "failed")],
)
def test_second_message_after_finish_has_no_second_effect_and_reannounces(
    store: Store,
    first_error: Exception | None,
    status: str,
) -> None:
    event = ev()
    dispatch(store, event)
    run_event(event, "d1", "worker-1", store, RecordingDriver(first_error))
    before = store.get(event.id)
    driver = RecordingDriver()
    for dispatch_id in ("d2", "d1"):  # another task message, or a redelivery of the first
        outcome = run_event(event, dispatch_id, "worker-2", store, driver)
        assert outcome.claim is Claim.FINISHED
        assert outcome.finished is Status(status)
    assert driver.calls == []
    assert store.get(event.id) == before


def test_concurrently_held_event_is_skipped_without_completion(store: Store) -> None:
    event = ev()
    dispatch(store, event)
    assert store.claim(event.id, "d1", "worker-1", LEASE).outcome is Claim.CLAIMED
    before = store.get(event.id)
    driver = RecordingDriver()
    for dispatch_id in ("d2", "d1"):  # another message, or the same one redelivered
        outcome = run_event(event, dispatch_id, "worker-2", store, driver)
        assert outcome.claim is Claim.HELD
        assert outcome.finished is None
    assert driver.calls == []
    assert store.get(event.id) == before


def test_an_event_whose_claim_expired_is_taken_over_and_the_old_holder_fenced_off(
    store: Store,
) -> None:
    """Its first worker stopped renewing (it died, or lost the ledger): a task message
    sent again takes the event over with a larger token; a late outcome of the first
    holder is refused, and only the new holder's completion is announced."""
    event = ev()
    dispatch(store, event)
    first = store.claim(event.id, "d1", "stalled-worker", LEASE)
    pass_time(store.engine, LEASE + 1)  # it expired
    driver = RecordingDriver()
    outcome = run_event(event, "d2", "worker-2", store, driver, lease_seconds=LEASE)
    assert outcome.claim is Claim.CLAIMED
    assert outcome.finished is Status.SUCCEEDED
    assert driver.tokens == [first.token + 1]  # the driver is told the new token
    assert not store.finish(event.id, first.token, False, "late")
    row = store.get(event.id)
    assert row is not None
    assert (row["status"], row["attempts"], row["worker"]) == (Status.SUCCEEDED, 2, "worker-2")


def test_a_holder_taken_over_mid_action_records_nothing_and_announces_nothing(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The action outlives this worker's claim (its renewals did not reach the ledger)
    and another worker took the event over: this worker's outcome is not recorded."""
    event = ev()
    dispatch(store, event)

    class TakenOverDriver(RecordingDriver):
        def execute(self, e: VmEventMessage, hold: Hold) -> None:
            super().execute(e, hold)
            pass_time(store.engine, 6)  # this claim's lease expired
            taken = store.claim(e.id, "d2", "worker-2", LEASE)
            assert taken.outcome is Claim.CLAIMED

    with caplog.at_level(logging.ERROR, logger="scheduler.worker.execution"):
        outcome = run_event(event, "d1", "worker-1", store, TakenOverDriver(), lease_seconds=5)
    assert outcome.claim is Claim.CLAIMED
    assert outcome.finished is None
    assert store.status_of(event.id) is Status.RUNNING  # the new holder's to finish
    assert any("took the event over" in r.getMessage() for r in caplog.records)


def test_the_claim_is_renewed_while_the_action_runs(store: Store) -> None:
    """An action longer than the claim's lease keeps its claim: no other message may
    take the event over while its worker lives."""
    event = ev()
    dispatch(store, event)
    lease = 0.3
    started = threading.Event()
    release = threading.Event()
    taken_over: list[Any] = []

    class SlowDriver(RecordingDriver):
        def execute(self, e: VmEventMessage, hold: Hold) -> None:
            super().execute(e, hold)
            started.set()
            release.wait(30)

    runner = threading.Thread(
        target=lambda: run_event(event, "d1", "w1", store, SlowDriver(), lease_seconds=lease)
    )
    runner.start()
    assert started.wait(30)
    first_expiry = store.get(event.id)["lease_expires_at"]  # type: ignore[index]
    wait_until(
        lambda: store.get(event.id)["lease_expires_at"] > first_expiry,  # type: ignore[index]
        10,
        what="a renewal of the claim",
    )
    wait_until(lambda: store.now() > first_expiry + lease, 10, what="the first lease to pass")
    taken_over.append(store.claim(event.id, "d2", "w2", lease).outcome)
    release.set()
    runner.join(30)
    assert taken_over == [Claim.HELD]
    assert store.status_of(event.id) is Status.SUCCEEDED


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda s, e: None, id="unknown"),
        pytest.param(lambda s, e: (accept(s, [e]), s.confirm([e])), id="queued"),
    ],
)
def test_event_not_dispatched_in_the_ledger_frees_its_slot_as_failed(
    store: Store,
    caplog: pytest.LogCaptureFixture,
    setup: Callable[[Store, VmEventMessage], object],
) -> None:
    event = ev()
    setup(store, event)
    before = store.get(event.id)
    driver = RecordingDriver()
    with caplog.at_level(logging.ERROR, logger="scheduler.worker.execution"):
        outcome = run_event(event, "d1", "worker-1", store, driver)
    assert outcome.claim is Claim.UNKNOWN
    assert outcome.finished is Status.FAILED
    assert driver.calls == []
    assert store.get(event.id) == before
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_the_result_identifies_the_event(store: Store) -> None:
    event = ev("another")
    dispatch(store, event)
    outcome = run_event(event, "d1", "w", store, RecordingDriver())
    assert outcome.finished is Status.SUCCEEDED
    assert outcome.result() == {
        "outcome": "ran the action",
        "status": "succeeded",
        "event_id": "another",
        "action": "heal",
        "host": "compute-1",
        "vm": "vm-17",
        "attempt": 1,
        "seconds": outcome.seconds,
    }


def test_a_ledger_locked_after_the_action_delays_the_record_but_never_reruns_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger goes away while the action runs: recording the outcome is retried in
    place until it goes through, and the action is not run a second time."""
    path = tmp_path / "l.db"
    Store.connect(f"sqlite:///{path}").engine.dispose()  # the schema
    store = Store(sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05}))
    event = ev()
    dispatch(store, event)
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    class LockingDriver(RecordingDriver):
        def execute(self, e: VmEventMessage, hold: Hold) -> None:
            super().execute(e, hold)
            locker.execute("BEGIN EXCLUSIVE")  # nobody else may write now

    driver = LockingDriver()
    outcomes: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcomes.append(run_event(event, "d1", "w", store, driver))
    )
    with caplog.at_level(logging.WARNING, logger="scheduler.worker.execution"):
        worker.start()
        wait_until(
            lambda: sum("could not record" in r.getMessage() for r in caplog.records) >= 3,
            30,
            what="three failed attempts to record the outcome",
        )
        assert store.status_of(event.id) is Status.RUNNING
        locker.execute("ROLLBACK")  # the ledger is back
        worker.join(30)
    assert not worker.is_alive()
    assert driver.calls == [event]  # once
    assert outcomes[0].finished is Status.SUCCEEDED
    assert store.status_of(event.id) is Status.SUCCEEDED
    locker.close()
    store.engine.dispose()


def test_an_event_out_of_attempts_ends_failed_without_running(store: Store) -> None:
    event = ev()
    dispatch(store, event)
    assert store.claim(event.id, "d1", "w1", LEASE).outcome is Claim.CLAIMED  # it died
    pass_time(store.engine, LEASE + 1)
    driver = RecordingDriver()
    outcome = run_event(event, "d1", "w2", store, driver, max_attempts=1)
    assert outcome.claim is Claim.EXHAUSTED
    assert outcome.finished is Status.FAILED  # frees the slot
    assert outcome.dead is not None and "gave up after 1 attempts" in outcome.dead
    assert driver.calls == []
    assert store.status_of(event.id) is Status.FAILED


def test_the_worker_runs_the_ledgers_event_not_the_task_messages(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A task message forged on the broker (or altered) cannot choose the action."""
    event = ev()
    dispatch(store, event)
    forged = event.model_copy(update={"action": Action.STOP, "payload": {"rm": "-rf"}})
    driver = RecordingDriver()
    with caplog.at_level(logging.WARNING, logger="scheduler.worker.execution"):
        outcome = run_event(forged, "d1", "w", store, driver)
    assert driver.calls == [event]  # the accepted heal, as stored
    assert outcome.finished is Status.SUCCEEDED
    assert any("differs from the ledger" in r.getMessage() for r in caplog.records)


def test_an_action_past_its_time_limit_ends_failed_and_dead_lettered(store: Store) -> None:
    """Celery's soft time limit interrupts the driver: the event ends failed, listed
    among the dead letters, and its slot is freed."""
    event = ev()
    dispatch(store, event)
    outcome = run_event(event, "d1", "w", store, RecordingDriver(SoftTimeLimitExceeded()))
    assert outcome.finished is Status.FAILED
    assert outcome.dead == "ran past its time limit (ACTION_TIME_LIMIT): its outcome is unknown"
    row = store.get(event.id)
    assert row is not None
    assert (row["status"], row["error"]) == (Status.FAILED, outcome.dead)
    assert [d["id"] for d in store.dead_letters()] == [event.id]


def test_an_unknown_outcome_ends_failed_and_dead_lettered_not_as_an_ordinary_failure(
    store: Store,
) -> None:
    """A driver that could not learn how the cloud's operation ended: the event ends
    failed with that reason, and is dead-lettered for an operator to look at."""
    event = ev()
    dispatch(store, event)
    unknown = OutcomeUnknown("operation e1: outcome unknown: still running after 1800 s")
    outcome = run_event(event, "d1", "w", store, RecordingDriver(unknown))
    assert outcome.finished is Status.FAILED
    assert outcome.dead == str(unknown)
    row = store.get(event.id)
    assert row is not None
    assert (row["status"], row["error"]) == (Status.FAILED, str(unknown))
    assert [d["id"] for d in store.dead_letters()] == [event.id]


def test_a_success_learnt_late_is_recorded_with_its_note(store: Store) -> None:
    event = ev()
    dispatch(store, event)
    note = "outcome learnt late: the cloud could not be asked for 40 s (503)"

    class LateDriver(RecordingDriver):
        def execute(self, e: VmEventMessage, hold: Hold) -> str | None:
            super().execute(e, hold)
            return note

    outcome = run_event(event, "d1", "w", store, LateDriver())
    assert outcome.finished is Status.SUCCEEDED
    assert (outcome.dead, outcome.error, outcome.note) == (None, None, note)
    assert outcome.result()["note"] == note and "error" not in outcome.result()
    row = store.get(event.id)
    assert row is not None
    assert (row["status"], row["error"], row["dead_at"]) == (Status.SUCCEEDED, note, None)
    assert store.dead_letters() == []


def test_the_task_result_says_what_happened(store: Store) -> None:
    """What Flower shows as the task's result: the outcome, the event, the attempt, how
    long the action took and why it failed; a second message says it did not run."""
    event = ev()
    dispatch(store, event)
    first = run_event(event, "d1", "worker-1", store, RecordingDriver(ActionFailed("no room")))
    result = first.result()
    assert result == {
        "outcome": "ran the action",
        "status": "failed",
        "event_id": event.id,
        "action": event.action.value,
        "host": event.host,
        "vm": event.vm,
        "attempt": 1,
        "seconds": result["seconds"],
        "error": "no room",
    }
    assert isinstance(result["seconds"], float) and result["seconds"] >= 0
    assert first.failure() == "no room", "the task ends FAILURE with the reason"
    second = run_event(event, "d1", "worker-1", store, RecordingDriver())
    again = second.result()
    assert again["outcome"].startswith("already finished") and again["status"] == "failed"
    assert "attempt" not in again
    assert again["error"] == "no room" and second.failure() == "no room"


def test_only_an_event_left_failed_makes_the_task_a_failure(store: Store) -> None:
    """The task ends in Celery's FAILURE state exactly when its result would say
    ``failed``: a success (also one announced again) and the harmless duplicates —
    skipped while another message holds the event, or not dispatched — are not."""
    ok = ev("ok")
    dispatch(store, ok)
    assert run_event(ok, "d1", "w", store, RecordingDriver()).failure() is None
    assert run_event(ok, "d1", "w", store, RecordingDriver()).failure() is None  # again

    held = ev("held")
    dispatch(store, held)
    assert store.claim(held.id, "d1", "worker-1", LEASE).outcome is Claim.CLAIMED
    skipped = run_event(held, "d2", "worker-2", store, RecordingDriver())
    assert (skipped.result()["status"], skipped.failure()) == ("running", None)

    unknown = run_event(ev("never"), "d1", "w", store, RecordingDriver())
    assert (unknown.result()["status"], unknown.failure()) == ("unknown", None)

    exhausted = ev("exhausted")
    dispatch(store, exhausted)
    assert store.claim(exhausted.id, "d1", "w", 0.0).outcome is Claim.CLAIMED
    pass_time(store.engine, 1)
    out = run_event(exhausted, "d2", "w", store, RecordingDriver(), max_attempts=1)
    assert out.claim is Claim.EXHAUSTED
    assert out.failure() == "gave up after 1 attempts" == out.result()["error"]


def test_a_skipped_or_taken_over_task_result_still_says_the_events_status(store: Store) -> None:
    """Flower's result column has a status for every task message, never null: a
    duplicate skipped while another message runs the event says ``running``, as does a
    run taken over mid-action; a message for an event not dispatched says ``unknown``
    (not ``failed``: the ledger has no such outcome). Each result is plain JSON."""
    event = ev()
    dispatch(store, event)
    assert store.claim(event.id, "d1", "worker-1", LEASE).outcome is Claim.CLAIMED
    held = run_event(event, "d2", "worker-2", store, RecordingDriver()).result()
    assert (held["outcome"], held["status"]) == (
        "skipped: another task message is running it",
        "running",
    )

    other = ev("e2")
    dispatch(store, other)

    class TakenOverDriver(RecordingDriver):
        def execute(self, e: VmEventMessage, hold: Hold) -> None:
            super().execute(e, hold)
            pass_time(store.engine, 6)  # this claim's lease expired
            assert store.claim(e.id, "d3", "worker-3", LEASE).outcome is Claim.CLAIMED

    taken = run_event(other, "d1", "worker-1", store, TakenOverDriver(), lease_seconds=5).result()
    assert taken["status"] == "running" and "taken over" in taken["outcome"]
    assert taken["attempt"] == 1

    unknown = run_event(ev("never"), "d1", "worker-1", store, RecordingDriver()).result()
    assert (unknown["outcome"], unknown["status"]) == (
        "skipped: not dispatched in the ledger",
        "unknown",
    )
    for result in (held, taken, unknown):
        assert json.loads(json.dumps(result)) == result


class WaitingDriver(RecordingDriver):
    """An action that waits on its hold for up to a minute, as a driver polling a cloud
    operation does; says whether it was stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.stopped: list[str] = []

    def execute(self, event: VmEventMessage, hold: Hold) -> None:
        super().execute(event, hold)
        self.started.set()
        try:
            hold.wait(60)
        except ClaimLost as exc:
            self.stopped.append(str(exc))
            raise


def test_a_holder_whose_claim_is_taken_over_stops_its_action_and_records_nothing(
    store: Store,
) -> None:
    """Its renewal finds the claim taken over (the holder stalled, or its clock made its
    lease look expired to another worker): the driver is told at once and stops, rather
    than going on beside the new holder."""
    event = ev()
    dispatch(store, event)
    driver = WaitingDriver()
    outcomes: list[Any] = []
    runner = threading.Thread(
        target=lambda: outcomes.append(
            run_event(event, "d1", "w1", store, driver, lease_seconds=0.6)
        )
    )
    runner.start()
    assert driver.started.wait(30)
    pass_time(store.engine, 10)  # the claim expired: another worker takes the event over
    assert store.claim(event.id, "d2", "w2", LEASE).outcome is Claim.CLAIMED
    runner.join(30)
    assert not runner.is_alive()
    assert driver.stopped and "took the event over" in driver.stopped[0]
    assert outcomes[0].finished is None  # nothing recorded, nothing announced
    row = store.get(event.id)
    assert row is not None
    assert (row["status"], row["worker"], row["fence"]) == (Status.RUNNING, "w2", 2)


def test_a_holder_that_cannot_renew_for_a_whole_lease_stops_its_action(store: Store) -> None:
    """The ledger is unreachable from this worker: after a whole lease without a renewal
    the claim may have expired and the event been taken over, so the action stops and
    nothing is recorded; the event stays running for the sweeper to send again."""
    event = ev()
    dispatch(store, event)

    class CutOff(Store):
        def renew(self, event_id: str, token: int, lease_seconds: float) -> bool:
            raise sa.exc.OperationalError("UPDATE events", {}, Exception("unreachable"))

    cut = CutOff(store.engine)
    driver = WaitingDriver()
    outcomes: list[Any] = []
    runner = threading.Thread(
        target=lambda: outcomes.append(run_event(event, "d1", "w1", cut, driver, lease_seconds=0.6))
    )
    runner.start()
    runner.join(30)
    assert not runner.is_alive()
    assert driver.stopped and "for a whole lease" in driver.stopped[0]
    assert outcomes[0].finished is None
    assert store.status_of(event.id) is Status.RUNNING
