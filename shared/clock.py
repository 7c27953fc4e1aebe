"""The ledger's clock: one time for every lease, whatever the machines' clocks say.

A lease — an event's claim, the dispatcher's role, the sweeper's "unclaimed for so
long" — is stamped by one process and judged by another, often on another machine. If
each used its own clock, a worker 25 s slow would keep renewing a claim that everyone
else sees as nearly expired, and a second worker would take it over while the first
still runs the action. So every such time is the database's, read in the statement that
stamps or compares it: :data:`NOW`, epoch seconds as a float, as the ``*_at`` columns
hold them.

- PostgreSQL: ``statement_timestamp()``, the server's clock when the statement began
  (every use in one statement agrees; a statement that waited for a lock judges a
  lease as of its start, which only makes a lease look younger).
- SQLite: ``julianday('now')``, fixed for one statement. A SQLite ledger lives on one
  machine, so its processes share that machine's clock.

Durations measured inside one process (a renewal due, a backoff) stay on that process's
monotonic clock: they never cross a machine.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class ledger_now(FunctionElement[float]):
    """The database's time, in epoch seconds."""

    type = sa.Float()
    inherit_cache = True


@compiles(ledger_now, "postgresql")
def _postgresql(element: ledger_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM statement_timestamp()) AS DOUBLE PRECISION)"


@compiles(ledger_now, "sqlite")
def _sqlite(element: ledger_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(ledger_now)
def _other(element: ledger_now, compiler: SQLCompiler, **kw: Any) -> str:
    raise sa.exc.CompileError("the ledger runs on SQLite or PostgreSQL")


#: the ledger's time, to use inside a statement
NOW = ledger_now()


def read(conn: sa.Connection) -> float:
    """The ledger's time now (for what is shown, or for tests: never compare it with a
    stamp outside the statement that made it)."""
    return float(conn.execute(sa.select(NOW)).scalar_one())
