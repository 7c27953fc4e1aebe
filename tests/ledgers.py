"""Fresh ledgers for the tests, on SQLite and on PostgreSQL.

The ledger, mapping and monitoring-repository tests run on both: SQLite in a file of
their own, PostgreSQL in a database of their own on ``CAROUSEL_TEST_PG`` (default the
machine's server at 127.0.0.1:5432, user postgres), created for the test and dropped
after it (by :mod:`harness.ledgers`, which the fault suite uses too). Without a
PostgreSQL server those cases skip — and fail in CI (``CI=true``), where the server is
part of the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness.ledgers import PG, fresh_pg_database, pg_answers

KINDS = ["sqlite", "postgresql"]


@contextmanager
def fresh_ledger_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty ledger of ``kind``, removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if not pg_answers():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no PostgreSQL at {PG} (CI runs the ledger tests on it)")
        pytest.skip(f"no PostgreSQL at {PG}")
    with fresh_pg_database() as url:
        yield url


#: the stamps :func:`pass_time` moves, per table
_STAMPS = {
    "events": [
        "accepted_at",
        "dispatched_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
        "dead_at",
    ],
    "leases": ["expires_at"],
}


def pass_time(engine: sa.Engine, seconds: float) -> None:
    """Let ``seconds`` pass on the ledger's clock, as far as its rows can tell: every
    stamp moves that far into the past, so claims and leases expire and finished events
    age as they would have. (Leases are stamped and judged by the database's own clock,
    which a test cannot set.)"""
    with engine.begin() as conn:
        for table, columns in _STAMPS.items():
            moved = ", ".join(f"{c} = {c} - :s" for c in columns)
            conn.execute(sa.text(f"UPDATE {table} SET {moved}"), {"s": seconds})
