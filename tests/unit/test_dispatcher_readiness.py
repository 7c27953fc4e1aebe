"""Why a dispatcher is not dispatching, as /readyz and /stats say it
(scheduler.dispatcher.readiness): each cause named as it is."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from kombu.exceptions import OperationalError

from scheduler.dispatcher import readiness
from shared.errors import LeaseLost


@pytest.mark.parametrize(
    ("exc", "gave_up", "said"),
    [
        (
            OperationalError("[Errno 111] Connection refused"),
            False,
            "not connected to the broker: OperationalError: [Errno 111] Connection refused "
            "(reconnecting)",
        ),
        (ConnectionResetError(), False, "not connected to the broker: ConnectionResetError"),
        (LeaseLost("taken"), False, readiness.STANDBY),
        (OSError("socket shut"), True, "could not renew the dispatcher lease in time"),
        (
            sa.exc.OperationalError("SELECT 1", {}, Exception("database is locked")),
            False,
            "the ledger failed while starting the session: Exception: database is locked",
        ),
    ],
)
def test_a_session_that_ended_says_why(exc: Exception, gave_up: bool, said: str) -> None:
    assert said in readiness.session_ended(exc, gave_up)


def test_only_another_holder_of_the_lease_makes_a_standby() -> None:
    """The broker out of reach is not a standby (a dispatcher pointed at a closed port
    once said it was), nor is the ledger out of reach."""
    down = readiness.broker_down(OperationalError("[Errno 111] Connection refused"))
    assert "standby" not in down and "another dispatcher" not in down
    ledger = readiness.ledger_down(sa.exc.OperationalError("SELECT 1", {}, Exception("gone")))
    assert ledger.startswith("cannot reach the ledger") and "standby" not in ledger
    assert readiness.STANDBY.startswith("standby: another dispatcher holds")
