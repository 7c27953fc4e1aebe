"""Retrying the monitoring's I/O until it works: a monitoring loop has nothing better to
do than wait for its ledger or broker, and must not skip a step (a change whose event
was not raised, or whose row was not written, would be lost)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa

from producer.errors import BrokerUnavailable, Unroutable, VmBeingRemoved
from shared.backoff import Backoff

log = logging.getLogger(__name__)
T = TypeVar("T")

#: worth waiting out: the broker or the ledger is away or busy, or a REST call is
#: removing the event's VM from the mapping (once it is done, the event re-adds it)
TRANSIENT: tuple[type[BaseException], ...] = (
    BrokerUnavailable,
    Unroutable,
    VmBeingRemoved,
    sa.exc.SQLAlchemyError,
    OSError,
)


async def until_done(what: str, attempt: Callable[[], Awaitable[T]], cap: float = 5.0) -> T:
    """``await attempt()`` until it does not raise a :data:`TRANSIENT` error."""
    backoff = Backoff(first=0.2, cap=cap)
    while True:
        try:
            return await attempt()
        except TRANSIENT as exc:
            delay = backoff.next()
            log.warning("%s failed (%r); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)


async def in_thread(what: str, fn: Callable[[], T]) -> T:
    """:func:`until_done` for a blocking call (the ledger's)."""
    return await until_done(what, lambda: asyncio.to_thread(fn))
