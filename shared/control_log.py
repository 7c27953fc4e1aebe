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

from shared import partition_leases
from shared.clock import NOW
from shared.db import dispatcher_controls, write_lock_first

#: the section of the change that takes every shard back to its settings
RESET = "reset"
#: tries of an append that lost its version to another at once
TRIES = 5


@dataclass(frozen=True)
class Control:
    version: int
    section: str
    body: dict[str, Any]


def append(conn: sa.Connection, section: str, body: Mapping[str, Any]) -> int:
    """Append the change as the next version; returns it. Two appending at once: the
    primary key keeps one, and the other takes the version after (on PostgreSQL its
    insert waits for the winner's commit, then does nothing, and the next read sees it)."""
    write_lock_first(conn)
    t = dispatcher_controls
    text = json.dumps(dict(body), sort_keys=True)
    for _ in range(TRIES):
        version = (
            int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.version), 0))).scalar_one())
            + 1
        )
        insert = partition_leases.dialect_insert(conn)(t).values(
            version=version, section=section, body=text, made_at=NOW
        )
        won = conn.execute(
            insert.on_conflict_do_nothing(index_elements=[t.c.version]).returning(t.c.version)
        ).scalar()
        if won is not None:  # (rowcount says nothing here: -1 on PostgreSQL)
            return version
    raise RuntimeError(f"could not append a control in {TRIES} tries")


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
    last = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.version), 0))).scalar_one())
    conn.execute(t.delete())
    conn.execute(t.insert().values(version=last + 1, section=RESET, body="{}", made_at=NOW))
    return last + 1
