"""The cluster of dispatcher shards as the ledger holds it, for people (``GET /shards``,
``carousel status``): who lives, which partitions each holds and with which token, the
share tables, and the mode marker.

Read only, from the ledger's rows, so any shard (or a single dispatcher) answers for all
of them alike. Every ``expires_in`` is seconds left by the ledger's clock
(:mod:`shared.clock`): the row's ``expires_at`` minus the ledger's time read once, at the
start of the reading, so the times of one answer agree with each other; a lease or a
shard whose time ran out counts as gone, as :func:`shared.partition_leases.holders` and
:func:`shared.partition_leases.live_shards` judge.

Everything is read in the caller's transaction. On PostgreSQL at READ COMMITTED each
statement sees what was committed before it began, so the parts of one answer may be a
round apart (a shard that took a partition a moment ago may not hold it yet in the list
of leases): it is a view, nothing decides on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shared import clock
from shared import partition_leases as pl
from shared import share_tables as st
from shared.db import leases
from shared.lease import DISPATCHER

#: seconds are given to the millisecond
DIGITS = 3


@dataclass(frozen=True)
class _Lease:
    """A row of ``leases`` as read."""

    holder: str
    expires_at: float
    paused: bool
    token: int

    def held(self, now: float) -> bool:
        """Whether someone holds it at ``now`` (the rule of ``holders``)."""
        return self.holder != "" and self.expires_at >= now


def cluster(conn: sa.Connection, partitions: int) -> dict[str, Any]:
    """The shards of a cluster of ``partitions`` partitions (``DISPATCHER_PARTITIONS``),
    JSON-ready:

    - ``partitions``: that number;
    - ``marker``: the ``dispatcher`` lease (:data:`shared.lease.DISPATCHER`), which shards
      co-hold as holder ``shards`` and a single dispatcher holds under its own name:
      ``holder`` (None when no one holds it: expired or never taken), ``expires_in``
      (None then too) and ``paused`` (what the holder said; False when no one holds it,
      as :func:`shared.lease.holder_paused`);
    - ``shards``: the live shards, by name: ``shard``, ``started_at`` (epoch seconds, the
      ledger's clock), ``expires_in`` (of its heartbeat), ``demand``, ``in_flight`` and
      ``seen_version`` as of its last heartbeat, ``partitions_held`` (the partitions whose
      unexpired lease it holds now, ascending) and ``share`` (its slots in the newest
      share table; None when there is none or it has no place in it);
    - ``partition_leases``: one per partition, ascending: ``partition``, ``holder`` (None
      when no one holds it: released, expired or never created), ``expires_in`` (None
      when no one holds it) and ``token`` (the fencing token of the last tenure; None
      when the lease was never created);
    - ``share_tables``: ``newest`` and ``agreed`` (:func:`shared.share_tables.agreed_as_read`
      of what was read here), each ``{version, shares}`` or None.

    With ``partitions`` 0 (a single dispatcher) only the marker is read: ``shards`` and
    ``partition_leases`` are empty and both share tables None, whatever rows an earlier
    run of shards left."""
    if partitions < 0:
        raise ValueError(f"partitions must be at least 0, not {partitions}")
    now = clock.read(conn)
    rows = {
        name: _Lease(holder, float(expires_at), bool(paused), int(token))
        for name, holder, expires_at, paused, token in conn.execute(
            sa.select(
                leases.c.name,
                leases.c.holder,
                leases.c.expires_at,
                leases.c.paused,
                leases.c.token,
            ).where(
                sa.or_(leases.c.name == DISPATCHER, leases.c.name.startswith(pl.PREFIX))
                if partitions
                else leases.c.name == DISPATCHER
            )
        )
    }
    answer: dict[str, Any] = {
        "partitions": partitions,
        "marker": _marker(rows.get(DISPATCHER), now),
        "shards": [],
        "partition_leases": [],
        "share_tables": {"newest": None, "agreed": None},
    }
    if partitions == 0:
        return answer
    held = [_partition(p, rows.get(pl.lease_name(p)), now) for p in range(partitions)]
    holders = {lease["partition"]: lease["holder"] for lease in held if lease["holder"]}
    live = pl.live_shards(conn)
    newest = st.latest(conn)
    agreed = st.agreed_as_read(conn, newest, live, holders, range(partitions))
    answer["shards"] = [
        {
            "shard": row.shard,
            "started_at": row.started_at,
            "expires_in": _left(row.expires_at, now),
            "demand": row.demand,
            "in_flight": row.in_flight,
            "partitions_held": [p for p, holder in holders.items() if holder == row.shard],
            "seen_version": row.seen_version,
            "share": None if newest is None else newest.shares.get(row.shard),
            "url": row.url,
        }
        for row in live
    ]
    answer["partition_leases"] = held
    answer["share_tables"] = {"newest": _table(newest), "agreed": _table(agreed)}
    return answer


def _left(expires_at: float, now: float) -> float:
    return round(float(expires_at) - now, DIGITS)


def _marker(row: _Lease | None, now: float) -> dict[str, Any]:
    if row is None or not row.held(now):
        return {"holder": None, "expires_in": None, "paused": False}
    return {"holder": row.holder, "expires_in": _left(row.expires_at, now), "paused": row.paused}


def _partition(partition: int, row: _Lease | None, now: float) -> dict[str, Any]:
    held = row is not None and row.held(now)
    return {
        "partition": partition,
        "holder": row.holder if row is not None and held else None,
        "expires_in": _left(row.expires_at, now) if row is not None and held else None,
        "token": None if row is None else row.token,
    }


def _table(table: st.ShareTable | None) -> dict[str, Any] | None:
    return None if table is None else {"version": table.version, "shares": dict(table.shares)}
