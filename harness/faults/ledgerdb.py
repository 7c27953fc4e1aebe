"""The fault stack's ledger: a SQLite file in the run's directory, or a fresh database on
the machine's PostgreSQL (:mod:`harness.ledgers`); and the harness's own reads and
writes of it, through SQLAlchemy so that one SQL text (``:name`` parameters) runs on
both.

On PostgreSQL the stack's dispatcher reaches the server through a
:class:`~harness.faults.proxy.CuttableProxy` (:attr:`LedgerDb.dispatcher_url`), so a
fault can cut that one process off from the ledger while every other process — a
standby dispatcher included — keeps its direct connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from harness.faults.proxy import CuttableProxy
from harness.ledgers import fresh_pg_database
from shared.db import Pool, make_engine

SQLITE, POSTGRESQL = "sqlite", "postgresql"
#: the harness reads from a few threads at most (a fault, a recovery wait, the report)
_HARNESS_POOL = Pool(size=2, overflow=4)


class LedgerDb:
    def __init__(self, kind: str, base: Path) -> None:
        if kind not in (SQLITE, POSTGRESQL):
            raise ValueError(f"no such ledger kind: {kind!r}")
        self.kind = kind
        self.sqlite_path = base / "ledger.db" if kind == SQLITE else None
        self.proxy: CuttableProxy | None = None
        self._exit = contextlib.ExitStack()
        self._engine: sa.Engine | None = None
        self.url = f"sqlite:///{self.sqlite_path}" if self.sqlite_path else ""

    def open(self) -> None:
        """Create the PostgreSQL database and the dispatcher's proxy (nothing on SQLite:
        the services create the file)."""
        if self.kind != POSTGRESQL or self.url:
            return
        self.url = self._exit.enter_context(fresh_pg_database(prefix="carousel_faults"))
        server = sa.make_url(self.url)
        self.proxy = CuttableProxy((server.host or "127.0.0.1", server.port or 5432))
        self._exit.callback(self.proxy.close)

    @property
    def dispatcher_url(self) -> str:
        """The URL the stack's (active) dispatcher is given: through the proxy on
        PostgreSQL."""
        if self.proxy is None:
            return self.url
        server = sa.make_url(self.url)
        return server.set(host="127.0.0.1", port=self.proxy.port).render_as_string(
            hide_password=False
        )

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            if not self.url:
                raise RuntimeError("the ledger is not open")
            self._engine = make_engine(self.url, pool=_HARNESS_POOL)
        return self._engine

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]

    def write(self, sql: str, **params: Any) -> int:
        """Run one statement in its own transaction; the rows it changed."""
        with self.engine.begin() as conn:
            return int(conn.execute(sa.text(sql), params).rowcount)

    def last_dispatch(self, hosts: Collection[str] = ()) -> float:
        """When the last event (of ``hosts``, when given) was dispatched; 0.0: none."""
        if not hosts:
            [(at,)] = self.rows("SELECT max(dispatched_at) FROM events")
            return float(at or 0.0)
        names = {f"h{i}": host for i, host in enumerate(sorted(hosts))}
        among = ", ".join(f":{n}" for n in names)
        [(at,)] = self.rows(
            f"SELECT max(dispatched_at) FROM events WHERE host IN ({among})", **names
        )
        return float(at or 0.0)

    def close(self) -> None:
        """Drop the harness's connections, and the PostgreSQL database with its proxy."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._exit.close()
