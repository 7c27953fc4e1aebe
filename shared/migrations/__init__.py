"""The ledger's schema, kept by Alembic migrations (``versions/``).

Every service calls :func:`migrate` when it starts: it brings the ledger to the newest
revision, one process at a time (a PostgreSQL advisory lock held for the transaction,
or a lock file next to a SQLite ledger), so services starting together never race.
``shared/db.py`` describes the tables of the newest revision
(``tests/unit/test_migrations.py`` keeps the two equal).

A schema change is a new revision: ``alembic -c shared/migrations/alembic.ini revision
-m "what"`` against a scratch ledger, then edit it; ``tests/unit/test_migrations.py``
fails while the revisions and ``shared/db.py`` disagree.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

logging.getLogger("alembic").setLevel(logging.WARNING)  # our own line says what ran

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy.engine import Connection, Engine  # noqa: E402

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: pg_advisory_xact_lock's key: "carousel" in ASCII, as a 64-bit integer
LOCK_KEY = 0x6361726F7573656C


def target_metadata() -> sa.MetaData:
    from shared.db import metadata

    return metadata


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: Connection) -> str | None:
    """The revision ``connection``'s ledger is at (None: not under migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the ledger at ``engine`` to :func:`head` (see the module's docstring)."""
    newest = head()
    with _one_at_a_time(engine) as conn:
        before = current(conn)
        if before != newest:
            command.upgrade(config(conn), newest)
            log.info("ledger schema upgraded from %s to %s", before or "nothing", newest)


@contextlib.contextmanager
def _one_at_a_time(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that no other migrating process holds at once."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_KEY)))
            yield conn
        return
    database = engine.url.database
    lock = Path(f"{database}.migrating") if database and database != ":memory:" else None
    with contextlib.ExitStack() as stack:
        if lock is not None:
            handle = stack.enter_context(lock.open("a"))
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        conn = stack.enter_context(engine.begin())
        yield conn
