"""The one backoff helper, and the worker's in-place retry of a ledger write built on it."""

from __future__ import annotations

import pytest

from scheduler.worker.execution import _persist
from shared.backoff import Backoff


def test_delays_double_up_to_the_cap_and_reset_starts_again() -> None:
    backoff = Backoff(first=0.2, cap=1.0)
    assert [backoff.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.waited == pytest.approx(3.4)
    backoff.reset()
    assert (backoff.next(), backoff.waited) == (0.2, 0.2)


@pytest.mark.parametrize(("first", "cap", "factor"), [(0, 1, 2), (2, 1, 2), (0.1, 1, 0.5)])
def test_nonsense_is_refused(first: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(first=first, cap=cap, factor=factor)


def test_persist_retries_until_the_write_goes_through() -> None:
    attempts: list[int] = []
    slept: list[float] = []

    def write() -> bool:
        attempts.append(1)
        if len(attempts) < 4:
            raise OSError("database is locked")
        return True

    _persist(write, "record", sleep=slept.append)
    assert len(attempts) == 4
    assert slept == [0.1, 0.2, 0.4]


def test_persist_never_gives_up_on_a_long_ledger_outage() -> None:
    """Giving up would hand the task back to Celery, whose retry runs the action again."""
    slept: list[float] = []
    failures = 500  # about 40 minutes of outage at the 5 s cap

    def write() -> bool:
        if len(slept) < failures:
            raise OSError("database is locked")
        return True

    _persist(write, "record", sleep=slept.append)
    assert len(slept) == failures
    assert max(slept) == 5.0  # capped
    assert sum(slept) > 600  # longer than the old give-up
