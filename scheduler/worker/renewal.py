"""Keeping claims alive: one renewal thread per worker process renews every claim held
in it, each every third of its lease, until the claim's holder lets go.

A thread per action would cost a thread start and join per event (measured: a quarter
of the end-to-end rate on a busy 2-core machine, where each hand-off between threads
waits for the dispatcher). The shared thread is started once per process (after a fork,
again) and never woken for a new claim: it wakes at the earliest renewal due, or every
third of the shortest lease it has seen, so a claim is renewed at most two thirds of a
lease after it was taken — before it expires.

A renewal that finds the claim over (taken over, or finished) ends the hold; so does a
ledger that could not be reached for a whole lease since the last renewal that went
through, measured from before that renewal was sent: by then the claim may have expired
by the ledger's clock and another worker taken the event over. Either way the driver
is told (:class:`~scheduler.worker.hold.Hold`) and stops.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from types import TracebackType

from scheduler.worker.hold import Hold
from shared.store import Store

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Keeps one claim renewed while the block it guards runs; ``hold`` is told when the
    claim is over (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        event_id: str,
        hold: Hold,
        lease_seconds: float,
        claimed_at: float,
    ) -> None:
        """``claimed_at``: this process's monotonic time just before the claim was sent."""
        self.store = store
        self.event_id = event_id
        self.hold = hold
        self.lease_seconds = lease_seconds
        self.due = 0.0  # monotonic time of the next renewal
        #: until when the claim surely holds: a lease from before the last renewal that
        #: went through was sent (monotonic)
        self.sure_until = claimed_at + lease_seconds
        #: the outcome is being recorded: a renewal that finds the claim over now is
        #: not news (the event just finished)
        self.finishing = False

    def __enter__(self) -> LeaseKeeper:
        self.due = time.monotonic() + self.lease_seconds / 3
        _renewals().add(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _renewals().remove(self)

    def renew(self) -> None:
        sent = time.monotonic()
        try:
            held = self.store.renew(self.event_id, self.hold.token, self.lease_seconds)
        except Exception:
            if time.monotonic() < self.sure_until:
                log.warning("could not renew the claim of event %s", self.event_id, exc_info=True)
                return
            held = False
            why = f"could not renew the claim for a whole lease ({self.lease_seconds:g} s)"
        else:
            why = "another worker took the event over (its claim had expired)"
        if held:
            self.sure_until = sent + self.lease_seconds
        elif not self.hold.lost.is_set() and not self.finishing:
            log.warning("event %s: %s; stopping its action", self.event_id, why)
            self.hold.lose(why)


class _Renewals:
    """The claims held in this process, and the thread that renews them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, LeaseKeeper] = {}
        self._tick = 1.0  # a third of the shortest lease seen, at most a second
        threading.Thread(target=self._run, name="claim-renewals", daemon=True).start()

    def add(self, keeper: LeaseKeeper) -> None:
        with self._lock:
            self._held[id(keeper)] = keeper
            self._tick = min(self._tick, keeper.lease_seconds / 3)

    def remove(self, keeper: LeaseKeeper) -> None:
        with self._lock:
            self._held.pop(id(keeper), None)

    def _run(self) -> None:
        while True:
            try:
                self._round()
            except Exception:  # the thread must outlive anything: else no claim is renewed
                log.exception("claim renewals: a round failed; going on")
                time.sleep(self._tick)

    def _round(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                due = [k for k in self._held.values() if k.due <= now]
                for keeper in due:
                    keeper.due = now + keeper.lease_seconds / 3
                next_due = min((k.due for k in self._held.values()), default=now + self._tick)
            for keeper in due:
                keeper.renew()
            time.sleep(max(0.0, min(next_due - time.monotonic(), self._tick)))


_instance: tuple[int, _Renewals] | None = None
_instance_lock = threading.Lock()


def _renewals() -> _Renewals:
    """This process's renewals (a forked child starts its own: threads do not fork)."""
    global _instance
    with _instance_lock:
        if _instance is None or _instance[0] != os.getpid():
            _instance = (os.getpid(), _Renewals())
        return _instance[1]
