"""Tests for scheduler.dispatcher.redelivery: what to do with a head (pure, a table)."""

from __future__ import annotations

import itertools

import pytest

from scheduler.dispatcher.dispatcher import Known
from scheduler.dispatcher.redelivery import Plan, ledger_needed, plan
from shared.models import Status

NEW, HELD, IN_FLIGHT = Known.NEW, Known.HELD, Known.IN_FLIGHT
S = Status
ALL_STATUSES: list[Status | None] = [None, *Status]
UNDISPATCHED_OR_UNKNOWN: list[Status | None] = [None, S.PENDING, S.QUEUED]

# (redelivered, what the dispatcher knows, ledger status) -> plan
TABLE: list[tuple[bool, Known, Status | None, Plan]] = [
    # redelivered, and the ledger says a worker has it or may have it: never offered
    *((True, k, S.DISPATCHED, Plan.REPUBLISH) for k in Known),
    *((True, k, S.RUNNING, Plan.COUNT) for k in Known),
    # redelivered and finished or cancelled: nothing to do
    *((True, k, s, Plan.ACK) for k in Known for s in (S.SUCCEEDED, S.FAILED, S.CANCELLED)),
    # redelivered, not yet handed over (or unknown to the ledger): as a first delivery
    *((True, NEW, s, Plan.HOLD) for s in UNDISPATCHED_OR_UNKNOWN),
    *((True, HELD, s, Plan.DUPLICATE) for s in UNDISPATCHED_OR_UNKNOWN),
    (True, IN_FLIGHT, S.PENDING, Plan.REPLACE_STALE),
    (True, IN_FLIGHT, S.QUEUED, Plan.REPLACE_STALE),
    (True, IN_FLIGHT, None, Plan.DUPLICATE),
    # a first delivery: the status only matters for an id in flight here
    *((False, NEW, s, Plan.HOLD) for s in ALL_STATUSES),
    *((False, HELD, s, Plan.DUPLICATE) for s in ALL_STATUSES),
    (False, IN_FLIGHT, S.PENDING, Plan.REPLACE_STALE),
    (False, IN_FLIGHT, S.QUEUED, Plan.REPLACE_STALE),
    (False, IN_FLIGHT, S.DISPATCHED, Plan.DUPLICATE),
    (False, IN_FLIGHT, S.RUNNING, Plan.DUPLICATE),
    (False, IN_FLIGHT, S.SUCCEEDED, Plan.DUPLICATE),
    (False, IN_FLIGHT, S.FAILED, Plan.DUPLICATE),
    (False, IN_FLIGHT, S.CANCELLED, Plan.DUPLICATE),
    (False, IN_FLIGHT, None, Plan.DUPLICATE),
]


def test_the_table_covers_every_case_once() -> None:
    cases = [(r, k, s) for r, k, s, _ in TABLE]
    assert len(cases) == len(set(cases))
    assert set(cases) == set(itertools.product([True, False], Known, ALL_STATUSES))


@pytest.mark.parametrize(
    ("redelivered", "known", "status", "expected"),
    TABLE,
    ids=[f"{'re' if r else 'first'}-{k.value}-{s}" for r, k, s, _ in TABLE],
)
def test_plan(redelivered: bool, known: Known, status: Status | None, expected: Plan) -> None:
    assert plan(redelivered, known, status) is expected


@pytest.mark.parametrize(
    ("redelivered", "known", "needed"),
    [
        (True, NEW, True),
        (True, HELD, True),
        (True, IN_FLIGHT, True),
        (False, NEW, False),
        (False, HELD, False),
        (False, IN_FLIGHT, True),
    ],
)
def test_ledger_needed(redelivered: bool, known: Known, needed: bool) -> None:
    assert ledger_needed(redelivered, known) is needed


@pytest.mark.parametrize("known", [NEW, HELD])
@pytest.mark.parametrize("status", ALL_STATUSES)
def test_a_status_not_looked_up_does_not_matter(known: Known, status: Status | None) -> None:
    """When the ledger is not needed, any status (or None) gives the same plan."""
    assert plan(False, known, status) is plan(False, known, None)


@pytest.mark.parametrize("known", list(Known))
def test_a_redelivered_dispatched_event_is_never_offered(known: Known) -> None:
    assert plan(True, known, S.DISPATCHED) not in (Plan.HOLD, Plan.REPLACE_STALE)
