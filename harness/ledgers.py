"""Fresh PostgreSQL ledgers, for the tests and the fault suite.

Each is a database of its own on ``CAROUSEL_TEST_PG`` (default the machine's server at
127.0.0.1:5432, user postgres, trust auth), created empty and dropped afterwards (with
``FORCE``: a service killed mid-session may leave a connection behind). The services
create the schema themselves when they start. What to do without a server — skip, fail,
give up — is the caller's call: :func:`pg_answers` tells.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

#: the server, as a URL without a database name
PG = os.environ.get("CAROUSEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")


def pg_answers(server: str = PG) -> bool:
    """Whether a PostgreSQL server answers at ``server`` (within 2 s)."""
    try:
        engine = sa.create_engine(f"{server}/postgres", connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except sa.exc.OperationalError:
        return False


@contextmanager
def fresh_pg_database(server: str = PG, prefix: str = "carousel_test") -> Iterator[str]:
    """The URL of a new, empty database on ``server``, dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield f"{server}/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
