"""The dispatcher shards' log of live changes: limits, classes and weights an operator
set through one shard's admin API, for every shard to apply in the same order.

A change (``section``: which one, ``body``: its JSON) is appended as the next version;
every shard reads what is newer than the last version it applied, at each round, and
applies it through the same code as the admin route. A shard joining applies the whole
log over its own settings. The first shard of a cluster (the shards' hold of the
dispatcher lease had expired: none lived) clears it, so that a whole-cluster restart reads
the settings again, as a single dispatcher's restart does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shared.clock import NOW
from shared.db import dispatcher_controls, write_lock_first

#: the section of the change that takes every shard back to its settings
RESET = "reset"


@dataclass(frozen=True)
class Control:
    version: int
    section: str
    body: dict[str, Any]


def append(conn: sa.Connection, section: str, body: Mapping[str, Any]) -> int:
    """Append the change as the next version; returns it. Appenders take turns: the
    table's SHARE ROW EXCLUSIVE lock on PostgreSQL (it waits for another appender's
    commit, not for readers), the write lock on SQLite — so the next version is free."""
    write_lock_first(conn)
    t = dispatcher_controls
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("LOCK TABLE dispatcher_controls IN SHARE ROW EXCLUSIVE MODE"))
    version = _last(conn) + 1
    conn.execute(
        t.insert().values(
            version=version,
            section=section,
            body=json.dumps(dict(body), sort_keys=True),
            made_at=NOW,
        )
    )
    return version


def _last(conn: sa.Connection) -> int:
    t = dispatcher_controls
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.version), 0))).scalar_one())


def since(conn: sa.Connection, version: int) -> list[Control]:
    """The changes newer than ``version``, oldest first."""
    t = dispatcher_controls
    rows = conn.execute(
        sa.select(t.c.version, t.c.section, t.c.body)
        .where(t.c.version > version)
        .order_by(t.c.version)
    )
    return [Control(int(v), s, json.loads(b)) for v, s, b in rows]


def reset(conn: sa.Connection) -> int:
    """The first shard of a cluster: every change is forgotten, and one more version,
    :data:`RESET`, says so — a shard that applies it goes back to its settings (one
    that lived on through the gap included). The versions go on growing."""
    t = dispatcher_controls
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("LOCK TABLE dispatcher_controls IN SHARE ROW EXCLUSIVE MODE"))
    last = _last(conn)
    conn.execute(t.delete())
    conn.execute(t.insert().values(version=last + 1, section=RESET, body="{}", made_at=NOW))
    return last + 1
