"""Leases in the ledger: one holder at a time of a named role, for a bounded time.

The dispatcher holds the ``dispatcher`` lease while it dispatches: a second dispatcher
started beside it (a rolling update, a second ``make up``) waits as a standby and takes
over once the lease has expired, within about one lease time of the holder's death.
Every change is one conditional statement, so the database decides who holds it, and
by the database's clock (:mod:`shared.clock`): the dispatchers' own clocks may differ.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa

from shared.clock import NOW
from shared.db import leases
from shared.errors import LeaseLost

#: the dispatcher's lease: its holder dispatches, and says in it whether it is paused
DISPATCHER = "dispatcher"


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    seconds: float

    def take(self, conn: sa.Connection, paused: bool | None = None) -> bool:
        """Take or renew the lease inside the caller's transaction: True if we hold it
        for ``seconds`` from now by the ledger's clock; False if another holder's has
        not expired (or the row was never created: :meth:`create`). ``paused``, if
        given, is recorded with it: whether the holder is paused (:func:`holder_paused`)."""
        values: dict[str, object] = {
            "holder": self.holder,
            "expires_at": NOW + self.seconds,
            # the fencing token: one more when the lease changes hands (see
            # shared.partition_leases, whose fences use it)
            "token": sa.case(
                (leases.c.holder == self.holder, leases.c.token), else_=leases.c.token + 1
            ),
        }
        if paused is not None:
            values["paused"] = paused
        res = conn.execute(
            leases.update()
            .where(
                leases.c.name == self.name,
                sa.or_(leases.c.holder == self.holder, leases.c.expires_at < NOW),
            )
            .values(**values)
        )
        return bool(res.rowcount == 1)

    def create(self, conn: sa.Connection) -> None:
        """The lease's row, expired, if there is none yet."""
        if conn.execute(sa.select(leases.c.name).where(leases.c.name == self.name)).first():
            return
        conn.execute(leases.insert().values(name=self.name, holder="", expires_at=0.0))

    def check(self, conn: sa.Connection, hosts: Collection[str] = ()) -> None:
        """As a fence (:mod:`shared.fencing`): the one lease covers every host."""
        self.hold(conn)

    def hold(self, conn: sa.Connection) -> None:
        """:meth:`take`, or raise :class:`LeaseLost` (rolling the caller's transaction
        back): the fence around work only the holder may do."""
        if not self.take(conn):
            raise LeaseLost(f"the {self.name} lease is held by another process")

    def release(self, conn: sa.Connection) -> None:
        """Give it up at once (a clean stop), so a standby need not wait for the expiry."""
        conn.execute(
            leases.update()
            .where(leases.c.name == self.name, leases.c.holder == self.holder)
            .values(expires_at=0.0)
        )


def holder_paused(conn: sa.Connection, name: str) -> bool:
    """Whether the holder of lease ``name`` said it is paused, as of its last renewal;
    False when no one holds it (expired: what a dead holder said is void)."""
    said = conn.execute(
        sa.select(leases.c.paused).where(leases.c.name == name, leases.c.expires_at >= NOW)
    ).scalar()
    return bool(said)
