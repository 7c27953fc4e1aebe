"""What a driver holds while it runs an action: the claim's fencing token, and word
that the claim is over.

The worker renews its claim in the ledger while the action runs
(:mod:`scheduler.worker.renewal`). If a renewal finds the claim taken over, or the
ledger could not be reached for a whole lease (by then another worker may have taken
the event over), :attr:`Hold.lost` is set: the driver's next :meth:`Hold.wait` or
:meth:`Hold.check` raises :class:`ClaimLost`, so a stale holder stops instead of going
on beside the new one. What it already sent the cloud carries the smaller token, which
a cloud that remembers the largest one per operation refuses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from scheduler.worker.errors import ClaimLost


@dataclass
class Hold:
    #: the claim's fencing token: it grows with every claim of the event
    token: int
    #: set when the claim is over; see the module's docstring
    lost: threading.Event = field(default_factory=threading.Event)
    #: why it is over, once it is
    why: str = ""

    def lose(self, why: str) -> None:
        self.why = why
        self.lost.set()

    def check(self) -> None:
        """Raise :class:`ClaimLost` if the claim is over."""
        if self.lost.is_set():
            raise ClaimLost(self.why or "the claim is over")

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or raise :class:`ClaimLost` as soon as the claim is over."""
        if self.lost.wait(max(0.0, seconds)):
            self.check()
