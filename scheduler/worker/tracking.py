"""Following a cloud operation until its outcome is known.

A poll that fails (the cloud unreachable, a 5xx, a timeout) says nothing about the
operation: the cloud may still be working on it, and freeing the VM then would let the
VM's next event run beside it. So a driver that loses sight of an operation keeps asking
for the operation's own record, backing off, until it learns the final state — and says
so (:meth:`Tracker.seen` gives the note "learnt late") — or its bound passes: then the
outcome is unknown (:class:`~scheduler.worker.errors.OutcomeUnknown`: the event ends
``failed`` and dead-lettered). The bound is the driver's ``max_wait``, the action's time
limit (``ACTION_TIME_LIMIT``). Every wait is :meth:`Hold.wait`, so a holder whose claim
is over stops at once.
"""

from __future__ import annotations

import time

from scheduler.worker.errors import OutcomeUnknown
from scheduler.worker.hold import Hold
from shared.backoff import Backoff

#: the longest pause between two checks of an operation while the cloud cannot be asked
MAX_RECHECK_INTERVAL = 10.0


class Tracker:
    """One action's wait for its operation(s): the deadline, and the lapse (since when
    the cloud could not be asked, and its last error), if one is under way."""

    def __init__(self, what: str, poll_interval: float, max_wait: float) -> None:
        self.what = what
        self.poll_interval = poll_interval
        self.max_wait = max_wait
        self.deadline = time.monotonic() + max_wait
        self._backoff = Backoff(first=poll_interval, cap=max(poll_interval, MAX_RECHECK_INTERVAL))
        self._lost_since: float | None = None
        self._error = ""

    def lost(self, error: str, hold: Hold) -> None:
        """A check failed (``error``): wait before the next one, longer each time; or,
        once the bound has passed, raise :class:`OutcomeUnknown`."""
        now = time.monotonic()
        if self._lost_since is None:
            self._lost_since = now
        self._error = error
        if now >= self.deadline:
            raise OutcomeUnknown(
                f"{self.what}: outcome unknown: the cloud could not be asked for "
                f"{now - self._lost_since:.0f} s (last: {error}) when the wait of "
                f"{self.max_wait:.0f} s ended; the cloud may still be working on it"
            )
        hold.wait(min(self._backoff.next(), self.deadline - now))

    def seen(self) -> str | None:
        """A check was answered. If it came after a lapse: the note to record with the
        outcome, should this answer be final ("learnt late ..."); else None."""
        if self._lost_since is None:
            return None
        lapse = time.monotonic() - self._lost_since
        note = f"outcome learnt late: the cloud could not be asked for {lapse:.0f} s"
        note += f" ({self._error})"
        self._lost_since = None
        self._backoff.reset()
        return note

    def running(self, state: str, hold: Hold) -> None:
        """The cloud says the operation still runs (``state``): wait a poll interval; or,
        once the bound has passed, raise :class:`OutcomeUnknown`."""
        now = time.monotonic()
        if now >= self.deadline:
            raise OutcomeUnknown(
                f"{self.what}: outcome unknown: still {state} after {self.max_wait:.0f} s; "
                "the cloud may still be working on it"
            )
        hold.wait(min(self.poll_interval, self.deadline - now))
