"""The ledger's schema under Alembic (shared/migrations), on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from shared import migrations
from shared.db import make_engine, metadata


def test_the_revisions_build_what_shared_db_describes(ledger_url: str) -> None:
    """A fresh ledger migrated to head has exactly shared/db.py's tables, columns,
    indexes and constraints: a schema change without its revision (or the other way
    round) fails here."""
    engine = make_engine(ledger_url)
    try:
        migrations.migrate(engine)
        with engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_services_starting_together_migrate_once(
    ledger_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Four processes' worth of engines migrate one fresh ledger at once: one upgrades,
    the others find it done (the advisory lock, or the lock file)."""
    caplog.set_level("INFO", logger="shared.migrations")
    engines = [make_engine(ledger_url) for _ in range(4)]
    errors: list[BaseException] = []

    def start(engine: sa.Engine) -> None:
        try:
            migrations.migrate(engine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        upgrades = [r for r in caplog.records if "upgraded" in r.getMessage()]
        assert len(upgrades) == 1, [r.getMessage() for r in caplog.records]
        with engines[0].connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM mapping_version")).scalar() == 1
    finally:
        for e in engines:
            e.dispose()


def _at_0001(engine: sa.Engine) -> None:
    """The ledger as revision 0001 made it, a lease taken in it."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0001")
        conn.execute(
            sa.text("INSERT INTO leases (name, holder, expires_at) VALUES ('dispatcher', 'a', 1)")
        )


def test_a_lease_of_0001_is_not_paused_after_0002(ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    try:
        _at_0001(engine)
        migrations.migrate(engine)
        with engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
            assert conn.execute(sa.text("SELECT paused FROM leases")).scalar() in (False, 0)
    finally:
        engine.dispose()
