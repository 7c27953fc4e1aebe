"""The ledger's SQL schema and engine (SQLAlchemy Core): SQLite on one machine,
PostgreSQL across machines."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from shared.models import UNDISPATCHED

metadata = sa.MetaData()

#: the rows ``ux_events_coalesce`` covers: events that coalesce (see shared.ledger) and are
#: not dispatched yet. Its text is also the conflict target's ``WHERE`` of the insert that
#: relies on it (SQLite matches a partial index by it)
COALESCING = sa.text(
    "coalescing AND status IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(UNDISPATCHED)))
)

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
    #: the event coalesces: while it is pending or queued, a coalescing event with the same
    #: host, VM, policy and action is answered with it instead of being stored
    sa.Column("coalescing", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    #: the VM's group as the event named it or the monitoring last saw it (None: none): a
    #: restarted dispatcher counts the group's disruption budget from the events in flight
    sa.Column("grp", sa.String(128)),
    sa.Index("ix_events_status", "status"),
    sa.Index("ix_events_key_status", "host", "vm", "policy", "status"),
    #: at most one coalescing event not yet dispatched per (host, VM, policy, action): the
    #: database, not timing, decides which of two concurrent ones is stored
    sa.Index(
        "ux_events_coalesce",
        "host",
        "vm",
        "policy",
        "action",
        unique=True,
        sqlite_where=COALESCING,
        postgresql_where=COALESCING,
    ),
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
    #: the holder says whether it is paused (the dispatcher's: what it holds back is no
    #: backlog the elasticity worker can serve); believed only while the lease holds
    sa.Column("paused", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    #: the fencing token: one more every time the lease passes to another holder (never on
    #: a renewal by the same one), so a holder's write can be fenced by the tenure it began
    #: in (shared/partition_leases.py)
    sa.Column("token", sa.BigInteger, nullable=False, default=0, server_default="0"),
)

#: the dispatcher shards alive, each one's word as of its last heartbeat: what every shard
#: reads to plan which partitions of the hosts it should hold and to take its share of the
#: limits (shared/partition_leases.py; not used by the dispatcher yet)
dispatcher_shards = sa.Table(
    "dispatcher_shards",
    metadata,
    sa.Column("shard", sa.String(128), primary_key=True),
    #: the ledger's clock: the shard is believed alive until then
    sa.Column("expires_at", sa.Float, nullable=False),
    #: when it joined (again, if its row had expired), by the ledger's clock
    sa.Column("started_at", sa.Float, nullable=False),
    #: its hosts with ready work, its events in flight, the partitions it holds
    sa.Column("demand", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("in_flight", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("partitions", sa.Integer, nullable=False, default=0, server_default="0"),
    #: the newest share table (``dispatcher_share_tables.version``) the shard has read and
    #: obeys, ``in_flight`` counted with it: "at this version, so many in flight"; NULL: no
    #: report that counts (none read yet, or partitions taken since: their events are its
    #: count now, see shared/share_tables.py)
    sa.Column("seen_version", sa.Integer),
    #: where its admin API answers (DISPATCHER_ADVERTISE_URL)
    sa.Column("url", sa.String(256), nullable=True),
)

#: the split of the global limit on events in flight between the dispatcher shards, one
#: agreed sequence of versions (shared/share_tables.py): the last few are kept
dispatcher_share_tables = sa.Table(
    "dispatcher_share_tables",
    metadata,
    #: one more than the previous: the primary key makes one of two publishers win
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    #: JSON, {shard: slots}, summing to the limit
    sa.Column("shares", sa.Text, nullable=False),
    #: when it was published, by the ledger's clock
    sa.Column("made_at", sa.Float, nullable=False),
)

dispatcher_controls = sa.Table(
    "dispatcher_controls",
    metadata,
    #: one more than the previous: the primary key makes one of two writers retry
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    #: which control (``scheduler.dispatcher.controls.CONTROLS``), and its JSON body
    sa.Column("section", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    #: when it was told, by the ledger's clock
    sa.Column("made_at", sa.Float, nullable=False),
)

#: one row per named limit (``kind`` ``action`` or ``group``, and its name), created on
#: its first use: a dispatcher shard locks it in the transaction that marks dispatched a
#: batch carrying that limit's work, then counts the limit's use, so that the shards
#: together keep ACTION_LIMITS and the group budgets (shared/named_budget.py)
dispatcher_limit_locks = sa.Table(
    "dispatcher_limit_locks",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
)

mapping_version = sa.Table(
    "mapping_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


#: the producer's monitoring repository (producer/monitoring/repository.py): the
#: cloud as last observed, per source
monitor_vms = sa.Table(
    "monitor_vms",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("vm", sa.String(128), primary_key=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("cpu", sa.Float, nullable=False),
    sa.Column("ram", sa.Float, nullable=False),
    sa.Column("grp", sa.String(128)),
    sa.Column("version", sa.BigInteger, nullable=False),
    #: when the VM entered its current state, as observed (the auto-heal debounce)
    sa.Column("since", sa.Float, nullable=False),
)

monitor_hosts = sa.Table(
    "monitor_hosts",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(128), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

monitor_groups = sa.Table(
    "monitor_groups",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("grp", sa.String(128), primary_key=True),
    sa.Column("min", sa.Integer, nullable=False),
    sa.Column("max", sa.Integer, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)


class Pool(NamedTuple):
    """A process's connection pool to a server ledger (``DB_POOL_SIZE``, ``DB_POOL_OVERFLOW``)."""

    size: int = 5
    overflow: int = 10


DEFAULT_POOL = Pool()


def write_lock_first(conn: Connection) -> None:
    """On SQLite, take the database's write lock now, at the start of ``conn``'s
    transaction (pysqlite begins one only at the first write): every read after it is
    of the latest state, and no other writer interleaves. Nothing on PostgreSQL, whose
    statements lock the rows they need."""
    if conn.dialect.name == "sqlite":
        conn.execute(vms.update().where(sa.false()).values(removing_since=None))


def dialect_insert(conn: Connection) -> Any:
    """The ``INSERT`` of ``conn``'s dialect, which knows ``ON CONFLICT``."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


#: the ledger cannot be reached, or is locked past its busy timeout: try again later (the
#: services answer 503, never 500)
LEDGER_TROUBLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


#: Every PostgreSQL session of the ledger's. psycopg prepares a statement on the server
#: from its fifth execution, and PostgreSQL may then settle on a generic plan made while
#: a table was empty: a lookup of a request's ids became a scan of the whole growing
#: table (``BENCH_LEDGER=postgresql make bench BENCH=ingest`` shows the difference). A
#: plan per execution costs less than that for every statement the ledger runs.
PG_SESSION = ("SET plan_cache_mode TO force_custom_plan",)


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
    if engine.dialect.name == "postgresql":
        session = list(PG_SESSION)
        if not durable:
            # as SQLite's synchronous=NORMAL: a commit returns before its WAL record is
            # flushed; a crash of the server may lose the last ones, never corrupts
            session.append("SET synchronous_commit TO off")

        @sa.event.listens_for(engine, "connect")
        def _session(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            for statement in session:
                cur.execute(statement)
            cur.close()
            dbapi_conn.commit()

    return engine
