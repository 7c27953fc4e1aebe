"""What every fault gets (:class:`Ctx`) and gives back (:class:`FaultResult`), and the
recovery measurement they share."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from harness.faults.accounting import Anomaly
from harness.faults.load import LoadGenerator
from harness.faults.stack import FaultStack
from harness.processes import wait_until

#: how long a fault waits for dispatching to resume before it calls it "no recovery"
RECOVERY_TIMEOUT = 90.0


@dataclass
class FaultResult:
    name: str
    injected: int = 0
    #: per injection: seconds from the injection until an event was dispatched again
    #: after the harness had restored what it broke (None: not within RECOVERY_TIMEOUT)
    recoveries: list[float | None] = field(default_factory=list)
    note: str = ""
    skipped: bool = False
    #: the fault could not be injected as meant (it raised): the run is not clean
    error: str = ""
    started: float = 0.0  # when the suite began injecting it
    #: what the fault itself found wrong (a fault that checks something besides the
    #: events), added to the suite's accounting and charged to the fault's phase
    anomalies: list[Anomaly] = field(default_factory=list)
    #: events the fault posted and accounted itself (in :attr:`anomalies`), apart from
    #: the load's: counted in the final line's events
    events: int = 0


@dataclass
class Ctx:
    stack: FaultStack
    load: LoadGenerator
    rng: random.Random
    log: Callable[[str], None]

    def recovery(
        self,
        injected_at: float,
        restored_at: float,
        accept: bool = False,
        hosts: Collection[str] = (),
    ) -> float | None:
        """Seconds from ``injected_at`` until the ledger shows an event (of one of
        ``hosts``, when given) dispatched at or after ``restored_at`` (and, with
        ``accept``, the producer answered 202 after it)."""

        def resumed() -> bool:
            if accept and not self.load.accepted_after(restored_at):
                return False
            return self.stack.ledger.last_dispatch(hosts) >= restored_at

        try:
            wait_until(resumed, RECOVERY_TIMEOUT, 0.05, what="dispatching again")
        except AssertionError:
            self.log(f"  no dispatch within {RECOVERY_TIMEOUT:.0f} s of restoring")
            return None
        return time.time() - injected_at

    def all_ended(self, ids: list[str], bound: float) -> bool:
        """Wait up to ``bound`` seconds for every one of ``ids`` to end (succeeded or
        failed in the ledger); False if some did not."""

        def ended() -> bool:
            rows = [self.stack.event(i) for i in ids]
            return all(r is not None and r["status"] in ("succeeded", "failed") for r in rows)

        try:
            wait_until(ended, bound, 0.5, what="the phase's events ended")
        except AssertionError:
            return False
        return True


@dataclass(frozen=True)
class Fault:
    name: str
    run: Callable[[Ctx], FaultResult]
    what: str
    #: the ledger it needs (``SQLITE`` or ``POSTGRESQL`` of :mod:`.ledgerdb`); None: either
    ledger: str | None = None
    #: True: it needs dispatcher shards (:attr:`.stack.Profile.shards`; ``--only`` runs
    #: it in the run that has them); False: it needs one dispatcher (it starts a standby
    #: beside it); None: either
    shards: bool | None = None
