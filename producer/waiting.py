"""Why a queued event waits, as ``GET /events/{id}`` says it (docs/design.md §4, §7).

The ledger answers first (:meth:`~shared.holding.HoldLedger.holds`): the dispatcher
paused, the host or VM unavailable, earlier events of its key. Only for an event the
ledger finds first in its key is the dispatcher asked (``GET /waiting/{id}`` on its admin
API, ``DISPATCHER_URL``, within ``DISPATCHER_TIMEOUT``): it alone knows the limits, the
classes and the turns of the heads it holds. An answer is always given, never an error:
a dispatcher that does not answer, or does not hold the event, is said to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from shared.holding import Holds
from shared.waiting import Reason, Waiting, behind

log = logging.getLogger(__name__)

LEDGER = "ledger"
PRODUCER = "producer"


@dataclass(frozen=True)
class Asked:
    """What the dispatcher said of an event: ``known`` (held, in_flight, new) and, for a
    held head, ``waiting``; or, when it could not be asked, ``failed`` (why not)."""

    known: str | None = None
    waiting: Waiting | None = None
    failed: str | None = None


class DispatcherClient:
    """The producer's questions to the dispatcher's admin API. A connection per
    question: the producer asks only about heads, and only on ``GET /events/{id}``."""

    def __init__(self, url: str, timeout: float, token: str = "") -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def waiting(self, event_id: str) -> Asked:
        try:
            async with httpx.AsyncClient(
                base_url=self.url, timeout=self.timeout, headers=self.headers
            ) as http:
                response = await http.get(f"/waiting/{quote(event_id, safe='')}")
        except httpx.HTTPError as exc:
            return Asked(failed=type(exc).__name__)
        if response.status_code != 200:
            return Asked(failed=f"it answered {response.status_code}")
        try:
            body = response.json()
            waiting = body.get("waiting")
            return Asked(
                known=str(body["known"]),
                waiting=None if waiting is None else Waiting.model_validate(waiting),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return Asked(failed=f"an answer it could not read ({type(exc).__name__})")


def from_ledger(event: dict[str, object], holds: Holds, sure: bool) -> Waiting | None:
    """The ledger's reason, if it has one. ``sure``: count only events accepted strictly
    earlier as ahead (one request's events of a key share an instant; their queue order
    is the request's, which the dispatcher holding the head knows)."""
    host, vm, policy = str(event["host"]), str(event["vm"]), str(event["policy"])
    if holds.paused:
        return Waiting(
            reason=Reason.PAUSED,
            text="the dispatcher is paused (POST /resume on its admin API resumes it)",
            source=LEDGER,
        )
    if not holds.host_available:
        return Waiting(
            reason=Reason.HOST_UNAVAILABLE, text=f"host {host} is unavailable", source=LEDGER
        )
    if not holds.vm_available:
        return Waiting(
            reason=Reason.VM_UNAVAILABLE,
            text=f"VM {vm} on host {host} is unavailable",
            source=LEDGER,
        )
    ahead = holds.surely_ahead if sure else holds.ahead
    if ahead and holds.head is not None:
        return behind(host, vm, policy, ahead, holds.head, LEDGER)
    return None


def decide(event: dict[str, object], holds: Holds, asked: Asked | None, url: str) -> Waiting:
    """What holds the queued ``event``: the ledger's reason, else the dispatcher's for a
    head it holds, else that no dispatcher holds it. ``asked`` None: no dispatcher is
    configured (``DISPATCHER_URL`` empty)."""
    sure = from_ledger(event, holds, sure=True)
    if sure is not None:
        return sure
    if asked is not None and asked.known == "held" and asked.waiting is not None:
        return asked.waiting
    tied = from_ledger(event, holds, sure=False)
    if tied is not None:
        return tied
    if asked is None:
        return Waiting(
            reason=Reason.NOT_HELD,
            text="no dispatcher holds it: none running, or it has not reached it yet "
            "(the producer asks none: DISPATCHER_URL is empty)",
            source=LEDGER,
        )
    if asked.failed is not None:
        return Waiting(
            reason=Reason.DISPATCHER_UNREACHABLE,
            text=f"no dispatcher answered at {url} ({asked.failed}): none running, or it "
            "cannot be reached; nothing else holds it by the ledger",
            source=PRODUCER,
        )
    return Waiting(
        reason=Reason.NOT_HELD,
        text="no dispatcher holds it: none running, or it has not reached it yet",
        source=PRODUCER,
    )


async def explain(
    event: dict[str, object], holds: Holds, dispatcher: DispatcherClient | None
) -> Waiting:
    """:func:`decide`, asking ``dispatcher`` only when the ledger is not sure."""
    if from_ledger(event, holds, sure=True) is not None or dispatcher is None:
        return decide(event, holds, None, "")
    asked = await dispatcher.waiting(str(event["id"]))
    if asked.failed is not None:
        log.debug("dispatcher not asked about %s: %s", event["id"], asked.failed)
    return decide(event, holds, asked, dispatcher.url)
