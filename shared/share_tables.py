"""The dispatcher shards' share tables: one agreed, versioned sequence in the ledger.

The global limit on events in flight is split between the shards by their demand
(:func:`scheduler.dispatcher.partitions.shares`). Were each shard to compute the split
from the rows it read, two shards reading at different moments would obey different
tables at once, and the sum they use could exceed the limit. So the split is published
in ``dispatcher_share_tables``: version 1, 2, 3 ..., each a table {shard: slots} summing
to the limit, the last :data:`KEEP` kept. Every shard obeys the newest version it has
read, and says which in its heartbeat (``dispatcher_shards.seen_version``) with its
events in flight counted in the same transaction: "at version v, I have n in flight".

A version is *agreed* (:func:`settled`) when every live shard has reported seeing it
with no more in flight than its share in it (0 if it has none), and every partition is
held by a live shard. The second condition counts the events of a shard that died: they
still run, and are nobody's count until another shard takes the partition they are for
and counts them; a shard that takes a partition therefore voids its report
(:func:`void_report`) until its next round counts them. A shard that died blocks nothing
once its heartbeat and leases have expired and its partitions are taken.

:func:`publish` adds a version only once the newest is agreed, so at most one switch is
in progress: a shard uses at most min(previous, newest) of the two until the newest is
agreed (:func:`scheduler.dispatcher.partitions.usable`), then the newest whole. Two
shards may publish at once (each believes itself the lowest live name for a moment):
each inserts the newest version plus one, the primary key keeps the first committed and
the other's insert does nothing (``ON CONFLICT DO NOTHING``; on SQLite the write lock,
taken first, already serialises them), so the sequence stays one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shared import partition_leases as leases
from shared.clock import NOW
from shared.db import dialect_insert, dispatcher_shards, dispatcher_share_tables, write_lock_first

#: the versions kept: the newest and the ones before it (the previous one is the ``old``
#: of a switch in progress; more only help an operator read the history)
KEEP = 4


@dataclass(frozen=True)
class ShareTable:
    """One version of the split of the limit: shard -> slots."""

    version: int
    shares: dict[str, int]


def _row(row: sa.Row[Any, Any] | None) -> ShareTable | None:
    if row is None:
        return None
    version, text = row
    shares = json.loads(text)
    return ShareTable(int(version), {str(k): int(v) for k, v in shares.items()})


def latest(conn: sa.Connection) -> ShareTable | None:
    """The newest version, or None before the first is published."""
    t = dispatcher_share_tables
    return _row(
        conn.execute(
            sa.select(t.c.version, t.c.shares).order_by(t.c.version.desc()).limit(1)
        ).first()
    )


def table(conn: sa.Connection, version: int) -> ShareTable | None:
    """Version ``version``, or None when there is none (not yet, or no longer kept)."""
    t = dispatcher_share_tables
    return _row(
        conn.execute(sa.select(t.c.version, t.c.shares).where(t.c.version == version)).first()
    )


def settled(
    newest: ShareTable,
    live: Sequence[leases.ShardRow],
    holders: Mapping[int, str],
    partitions: Iterable[int],
) -> bool:
    """Whether ``newest`` is agreed, from rows read: every ``live`` shard has reported
    seeing it with no more in flight than its share in it (0 for a shard not in it), and
    every one of ``partitions`` is held by a live shard (``holders``: partition -> the
    holder of its unexpired lease), so no event in flight is uncounted."""
    names = {row.shard for row in live}
    return all(
        row.seen_version == newest.version and row.in_flight <= newest.shares.get(row.shard, 0)
        for row in live
    ) and all(holders.get(partition) in names for partition in partitions)


def agreed(conn: sa.Connection, partitions: Iterable[int]) -> ShareTable | None:
    """The last agreed version (the ``old`` of a switch): the newest if :func:`settled`,
    else the one before it (agreed when the newest was published), None if none is."""
    wanted = list(partitions)
    return agreed_as_read(
        conn, latest(conn), leases.live_shards(conn), leases.holders(conn, wanted), wanted
    )


def agreed_as_read(
    conn: sa.Connection,
    newest: ShareTable | None,
    live: Sequence[leases.ShardRow],
    holders: Mapping[int, str],
    partitions: Iterable[int],
) -> ShareTable | None:
    """:func:`agreed`, from the rows the caller read in its transaction (``newest``: the
    version it reported at, even if another was published since)."""
    if newest is None:
        return None
    if settled(newest, live, holders, partitions):
        return newest
    return table(conn, newest.version - 1)


def reports(conn: sa.Connection, version: int) -> dict[str, int]:
    """The live shards' events in flight, of those whose report is at ``version``."""
    t = dispatcher_shards
    rows = conn.execute(
        sa.select(t.c.shard, t.c.in_flight).where(
            t.c.expires_at >= NOW, t.c.seen_version == version
        )
    )
    return {shard: int(n) for shard, n in rows}


def void_report(conn: sa.Connection, shard: str) -> None:
    """``shard``'s report counts no longer (it took partitions: the events in flight for
    their hosts are its count from now on, and its last report did not include them);
    its next heartbeat reports again."""
    t = dispatcher_shards
    conn.execute(t.update().where(t.c.shard == shard).values(seen_version=None))


def publish(conn: sa.Connection, shares: Mapping[str, int], partitions: Iterable[int]) -> int:
    """Publish ``shares`` as the next version, if they differ from the newest and the
    newest is agreed (the first version needs nothing); the version newest afterwards,
    whoever published it. A concurrent publisher of the same version wins or loses by
    the primary key (``ON CONFLICT DO NOTHING``: the loser's insert adds nothing, and it
    reads the winner's). Versions older than the last :data:`KEEP` are deleted."""
    write_lock_first(conn)
    newest = latest(conn)
    if newest is not None:
        if newest.shares == dict(shares):
            return newest.version
        agreed_now = agreed(conn, partitions)
        if agreed_now is None or agreed_now.version != newest.version:
            return newest.version  # a switch is in progress: one at a time
    version = 1 if newest is None else newest.version + 1
    t = dispatcher_share_tables
    insert = dialect_insert(conn)(t).values(
        version=version, shares=json.dumps(dict(shares), sort_keys=True), made_at=NOW
    )
    conn.execute(insert.on_conflict_do_nothing(index_elements=[t.c.version]))
    conn.execute(t.delete().where(t.c.version <= version - KEEP))
    now = latest(conn)
    assert now is not None  # ours, or the one that won
    return now.version
