"""Partition leases and shard membership: the ledger's side of dispatcher shards.

Several dispatcher shards may dispatch at once, each for a partition of the hosts. A
shard holds a partition through a lease in ``leases`` named ``dispatcher/p<i>``, for a
bounded time by the ledger's clock (:mod:`shared.clock`), and renews it while it lives.
Each lease carries a fencing token (``leases.token``) that grows by one every time the
lease passes to another holder, never on a renewal by the same one: a holder's tenure is
named by the token it began with. Every change is one conditional statement, so the
database decides who holds a partition — two shards reaching for it at once, exactly
one gets it — and no process reads then writes.

A shard can lose a partition without noticing (a pause of its process, a network cut
longer than the lease): another takes it over and serves its hosts. So a shard that acts
for a partition in the ledger (marking events dispatched, taking over their claims)
calls :func:`fence` in that same transaction, with the token it took the partition with:
if the lease is no longer its own, the write is rolled back. The fence holds the lease's
row until the transaction ends (FOR SHARE on PostgreSQL; on SQLite the write lock, taken
first), so a takeover waits for the transaction and no key is ever served by two shards
in the ledger at once.

Each shard also says, in its row of ``dispatcher_shards`` renewed by :func:`heartbeat`,
that it lives and what it has (hosts with ready work, events in flight, partitions held):
every shard reads them (:func:`live_shards`) to plan which partitions it should hold and
its share of the limits, tagged with the version of the share table it had read
(:mod:`shared.share_tables`). Nothing here decides that plan
(:mod:`scheduler.dispatcher.shards` does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from shared.clock import NOW
from shared.db import dialect_insert, dispatcher_shards, leases, write_lock_first
from shared.errors import LeaseLost

#: a partition's lease is named this followed by its number
PREFIX = "dispatcher/p"


def partition_of(host: str, partitions: int) -> int:
    """The host's partition, in ``range(partitions)``: the first 8 bytes of the BLAKE2b
    digest of its UTF-8 name, big-endian, modulo ``partitions``. Unlike ``hash()`` it is
    the same in every process, on every machine and every Python version."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    digest = hashlib.blake2b(host.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def lease_name(partition: int) -> str:
    """The name of ``partition``'s lease in ``leases``."""
    return f"{PREFIX}{partition}"


def lease_partition(name: str) -> int:
    """The partition a lease named by :func:`lease_name` is for."""
    return int(name.removeprefix(PREFIX))


@dataclass(frozen=True)
class ShardRow:
    """A live shard, as of its last heartbeat (times by the ledger's clock)."""

    shard: str
    started_at: float
    expires_at: float
    #: its hosts with ready work, its events in flight, the partitions it holds
    demand: int
    in_flight: int
    partitions: int
    #: the share table version it had read when it counted ``in_flight`` (None: no report
    #: that counts, see :mod:`shared.share_tables`)
    seen_version: int | None = None
    #: where its admin API answers (None: it did not say)
    url: str | None = None


def _names(partitions: Iterable[int]) -> list[str]:
    return [lease_name(p) for p in sorted(set(partitions))]


def _named(shard: str) -> str:
    # the empty holder is a released lease's: a shard named so would hold every one
    if not shard:
        raise ValueError("a shard needs a name")
    return shard


# -- partition leases -------------------------------------------------------------------
def ensure(conn: sa.Connection, partitions: Iterable[int]) -> None:
    """The leases of ``partitions``, expired and held by no one, where there are none yet
    (shards starting together may all call it: ``ON CONFLICT DO NOTHING``)."""
    rows = [{"name": n, "holder": "", "expires_at": 0.0} for n in _names(partitions)]
    if rows:
        stmt = dialect_insert(conn)(leases).on_conflict_do_nothing(index_elements=[leases.c.name])
        conn.execute(stmt, rows)


def take(conn: sa.Connection, shard: str, partition: int, seconds: float) -> int | None:
    """Take or renew ``partition``'s lease inside the caller's transaction, for
    ``seconds`` from now by the ledger's clock: the fencing token ``shard`` holds it with
    (one more than the last holder's when it changes hands), or None when another holder's
    lease has not expired (or the lease was never created: :func:`ensure`).

    One conditional ``UPDATE``: the ``WHERE`` is the rule (our own lease, or an expired
    one), and the ``SET`` reads the row it replaces, so two shards racing for a lease are
    decided by the database. A caller taking several in one transaction takes them in
    ascending order, as every shard does, so two never wait on each other in a cycle."""
    token = conn.execute(
        leases.update()
        .where(
            leases.c.name == lease_name(partition),
            sa.or_(leases.c.holder == _named(shard), leases.c.expires_at < NOW),
        )
        .values(
            holder=shard,
            expires_at=NOW + seconds,
            token=sa.case((leases.c.holder == shard, leases.c.token), else_=leases.c.token + 1),
        )
        .returning(leases.c.token)
    ).scalar()
    return None if token is None else int(token)


def renew_all(
    conn: sa.Connection, shard: str, partitions: Iterable[int], seconds: float
) -> dict[int, int]:
    """Renew, in one statement, those of ``partitions`` whose lease ``shard`` still holds:
    partition -> token of those kept, the others (taken over, released) absent. A lease
    that expired but that no one took since is kept, with its token: no other shard can
    have acted for it, since acting needs a :func:`take`, which changes the holder."""
    names = _names(partitions)
    if not names:
        return {}
    rows = conn.execute(
        leases.update()
        .where(leases.c.name.in_(names), leases.c.holder == _named(shard))
        .values(expires_at=NOW + seconds)
        .returning(leases.c.name, leases.c.token)
    )
    return {lease_partition(name): int(token) for name, token in rows}


def release(conn: sa.Connection, shard: str, partitions: Iterable[int]) -> None:
    """Give up those of ``partitions`` ``shard`` holds, at once (a clean hand-over: the
    next shard need not wait for them to expire). The holder is cleared too, so whoever
    takes one next — this shard again included — begins a new tenure with a new token,
    and a fence of this one fails from the commit on."""
    names = _names(partitions)
    if names:
        conn.execute(
            leases.update()
            .where(leases.c.name.in_(names), leases.c.holder == _named(shard))
            .values(holder="", expires_at=0.0)
        )


def fence(conn: sa.Connection, shard: str, partition: int, token: int) -> None:
    """Raise :class:`LeaseLost` (rolling the caller's transaction back) unless ``shard``
    holds ``partition``'s lease now with ``token``, unexpired: the check a shard makes in
    every ledger transaction that acts for a partition, so that one that lost it while
    paused cannot act on it.

    The lease's row stays held until the caller's transaction ends, so a takeover cannot
    commit in between: read FOR SHARE on PostgreSQL (a takeover's ``UPDATE`` waits for
    the transaction, and then finds the lease renewed or expired); on SQLite the write
    lock is taken first (no writer interleaves until the commit)."""
    write_lock_first(conn)
    row = conn.execute(
        sa.select(leases.c.holder, leases.c.token, (leases.c.expires_at >= NOW).label("live"))
        .where(leases.c.name == lease_name(partition))
        .with_for_update(read=True)
    ).first()
    if row is None or row.holder != shard or row.token != token or not row.live:
        raise LeaseLost(f"shard {shard!r} no longer holds partition {partition} with token {token}")


def holders(conn: sa.Connection, partitions: Iterable[int]) -> dict[int, str]:
    """partition -> the shard that holds its lease now; an expired or released lease's
    partition is absent."""
    names = _names(partitions)
    if not names:
        return {}
    rows = conn.execute(
        sa.select(leases.c.name, leases.c.holder).where(
            leases.c.name.in_(names), leases.c.holder != "", leases.c.expires_at >= NOW
        )
    )
    return {lease_partition(name): holder for name, holder in rows}


# -- membership -------------------------------------------------------------------------
def heartbeat(
    conn: sa.Connection,
    shard: str,
    seconds: float,
    demand: int,
    in_flight: int,
    partitions: int,
    seen_version: int | None = None,
    url: str | None = None,
) -> None:
    """``shard`` lives for ``seconds`` more by the ledger's clock, and has ``demand``
    hosts with ready work, ``in_flight`` events in flight and holds ``partitions``
    partitions; ``seen_version``: the share table it read in this transaction and obeys
    from now on, so ``in_flight`` is its report at that version (None: no report that
    counts; :mod:`shared.share_tables`). Its row is made at its first heartbeat, and
    ``started_at`` starts again when its row had expired (to the others it had left). The
    rows of the other shards that expired are deleted: they are void, and each restart
    names a new shard."""
    table = dispatcher_shards
    stmt = dialect_insert(conn)(table).values(
        shard=_named(shard),
        started_at=NOW,
        expires_at=NOW + seconds,
        demand=demand,
        in_flight=in_flight,
        partitions=partitions,
        seen_version=seen_version,
        url=url,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.shard],
            set_={
                "started_at": sa.case((table.c.expires_at < NOW, NOW), else_=table.c.started_at),
                "expires_at": stmt.excluded.expires_at,
                "demand": stmt.excluded.demand,
                "in_flight": stmt.excluded.in_flight,
                "partitions": stmt.excluded.partitions,
                "seen_version": stmt.excluded.seen_version,
                "url": stmt.excluded.url,
            },
        )
    )
    conn.execute(table.delete().where(table.c.shard != shard, table.c.expires_at < NOW))


def live_shards(conn: sa.Connection) -> list[ShardRow]:
    """The shards whose heartbeat has not expired, by name."""
    t = dispatcher_shards
    rows = conn.execute(
        sa.select(
            t.c.shard,
            t.c.started_at,
            t.c.expires_at,
            t.c.demand,
            t.c.in_flight,
            t.c.partitions,
            t.c.seen_version,
            t.c.url,
        )
        .where(t.c.expires_at >= NOW)
        .order_by(t.c.shard)
    )
    return [ShardRow(*r) for r in rows]


def leave(conn: sa.Connection, shard: str) -> None:
    """``shard`` leaves at once (a clean stop; its partitions: :func:`release`)."""
    conn.execute(dispatcher_shards.delete().where(dispatcher_shards.c.shard == shard))
