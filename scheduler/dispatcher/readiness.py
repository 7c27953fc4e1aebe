"""Why a dispatcher is not dispatching, in words: what ``/readyz`` answers and ``/stats``
shows as ``not_ready`` (None while its broker session runs, as the lease holder).

Each cause is named as it is, so that an operator is not sent after the wrong one: a
standby waits because another dispatcher holds the dispatcher lease; a dispatcher that
holds it (or could not ask the ledger) but has no broker session says so, with the
broker's error."""

from __future__ import annotations

import sqlalchemy as sa

from shared.errors import LeaseLost

#: before the first session
STARTING = "starting: connecting to the broker"
STANDBY = "standby: another dispatcher holds the dispatcher lease"


def broker_down(exc: BaseException) -> str:
    return f"not connected to the broker: {_said(exc)} (reconnecting)"


def ledger_down(exc: BaseException) -> str:
    return f"cannot reach the ledger to take the dispatcher lease: {_said(exc)}"


def session_ended(exc: BaseException, gave_up: bool) -> str:
    """Why a broker session that raised ``exc`` ended; ``gave_up``: the lease watch shut
    it, the lease not renewed for most of a lease (see :class:`.loop.LeaseWatch`)."""
    if isinstance(exc, LeaseLost):
        return STANDBY
    if gave_up:
        return "gave up its broker session: could not renew the dispatcher lease in time"
    if isinstance(exc, sa.exc.DBAPIError):
        return f"the ledger failed while starting the session: {_said(exc.orig or exc)}"
    return broker_down(exc)


def _said(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
