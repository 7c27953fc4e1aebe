"""The ledger's SQL schema and engine (SQLAlchemy Core): SQLite on one machine,
PostgreSQL across machines."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shared.backoff import Backoff

metadata = sa.MetaData()

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("vm", sa.String(128), nullable=False),
    sa.Column("policy", sa.String(128), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("worker", sa.String(255)),
    sa.Column("error", sa.Text),
    sa.Column("dispatch_id", sa.String(64)),
    sa.Column("accepted_at", sa.Float, nullable=False),
    sa.Column("dispatched_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    #: the token of the latest claim (see shared.ledger), and when that claim expires
    sa.Column("fence", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("lease_expires_at", sa.Float),
    #: when the event was dead-lettered (out of attempts or time): listed, re-drivable
    sa.Column("dead_at", sa.Float),
    sa.Index("ix_events_status", "status"),
    sa.Index("ix_events_key_status", "host", "vm", "policy", "status"),
)

hosts = sa.Table(
    "hosts",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(128), nullable=False, unique=True),
    sa.Column("available", sa.Boolean, nullable=False, default=True),
)

vms = sa.Table(
    "vms",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("vm", sa.String(128), nullable=False),
    sa.Column("available", sa.Boolean, nullable=False, default=True),
    #: when a removal of the VM began (the producer's clock), while it runs: events for
    #: the VM are refused meanwhile (a mark older than the removal's time limit is void)
    sa.Column("removing_since", sa.Float),
    sa.UniqueConstraint("host", "vm"),
)

keys = sa.Table(
    "keys",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("vm", sa.String(128), nullable=False),
    sa.Column("policy", sa.String(128), nullable=False),
    sa.UniqueConstraint("host", "vm", "policy"),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

mapping_version = sa.Table(
    "mapping_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


class Pool(NamedTuple):
    """A process's connection pool to a server ledger (``DB_POOL_SIZE``, ``DB_POOL_OVERFLOW``)."""

    size: int = 5
    overflow: int = 10


DEFAULT_POOL = Pool()


def make_engine(url: str, durable: bool = True, pool: Pool = DEFAULT_POOL) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so several processes can
    share one file. ``durable``: every commit reaches the disk before it returns
    (``synchronous=FULL``), so it survives a power loss; else (``NORMAL``) the last
    commits before a power cut may be rolled back — a crash of the process alone never
    loses one either way. ``pool`` sizes a server ledger's connection pool (a SQLite
    file needs none of its own)."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = sa.create_engine(
        url, pool_pre_ping=True, pool_size=pool.size, max_overflow=pool.overflow
    )
    if not durable and engine.dialect.name == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _async_commit(dbapi_conn: Any, _record: Any) -> None:
            # as SQLite's synchronous=NORMAL: a commit returns before its WAL record is
            # flushed; a crash of the server may lose the last ones, never corrupts
            cur = dbapi_conn.cursor()
            cur.execute("SET synchronous_commit TO off")
            cur.close()
            dbapi_conn.commit()

    return engine


def create_schema(engine: Engine, attempts: int = 5) -> None:
    """Create the tables if missing. Services starting together race to do it: the
    loser's CREATE fails with "already exists", and its retry finds the tables."""
    backoff = Backoff(first=0.05, cap=0.5)
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            break
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(backoff.next())
    with engine.begin() as conn:
        if conn.execute(sa.select(mapping_version.c.version)).first() is None:
            with contextlib.suppress(sa.exc.IntegrityError):  # another process won
                conn.execute(mapping_version.insert().values(id=1, version=0))
    _drop_stored_queue_names(engine)
    _add_new_event_columns(engine)


def _drop_stored_queue_names(engine: Engine) -> None:
    """Ledgers made before 0.2 stored each key's queue name (``keys.queue``, NOT NULL);
    names are now built by the topology alone, so the column goes."""
    if "queue" not in {c["name"] for c in sa.inspect(engine).get_columns("keys")}:
        return
    raced = (sa.exc.OperationalError, sa.exc.ProgrammingError)  # another process dropped it
    with contextlib.suppress(*raced), engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE keys DROP COLUMN queue"))


def _add_new_event_columns(engine: Engine) -> None:
    """Ledgers made before 0.3 lack the claim's fence and lease and the dead-letter
    mark, before 0.4 the VM-removal mark: add the columns (an existing running row counts
    as an expired claim)."""
    raced = (sa.exc.OperationalError, sa.exc.ProgrammingError)  # another process added it
    inspector = sa.inspect(engine)
    have = {t.name: {c["name"] for c in inspector.get_columns(t.name)} for t in (events, vms)}
    for table, column in [(t, c) for t in (events, vms) for c in t.columns]:
        if column.name in have[table.name]:
            continue
        ddl = (
            f"ALTER TABLE {table.name} ADD COLUMN {column.name} "
            f"{column.type.compile(engine.dialect)}"
        )
        default = column.server_default
        if isinstance(default, sa.DefaultClause):
            ddl += f" NOT NULL DEFAULT {default.arg}"
        with contextlib.suppress(*raced), engine.begin() as conn:
            conn.execute(sa.text(ddl))
