"""Alembic's environment. The services migrate on the connection
:func:`shared.migrations.migrate` passes in (``config.attributes["connection"]``); the
``alembic`` command (``-c shared/migrations/alembic.ini``) works on the ledger at
``CAROUSEL_DB_URL``."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

from shared.db import make_engine
from shared.migrations import target_metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        render_as_batch=True,  # SQLite alters a table by copying it
    )
    with context.begin_transaction():
        context.run_migrations()


if (given := context.config.attributes.get("connection")) is not None:
    run(given)
else:
    engine = make_engine(os.environ.get("CAROUSEL_DB_URL", "sqlite:///data/carousel.db"))
    with engine.connect() as conn:
        run(conn)
    engine.dispose()
