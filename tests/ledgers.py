"""Fresh ledgers for the tests, on SQLite and on PostgreSQL, and what only the tests do
to one (:func:`accept` events without their keys, :func:`ensure_keys` one at a time,
count a VM's :func:`unfinished_count`): the services' own calls are the ledger's.

The ledger, mapping and monitoring-repository tests run on both: SQLite in a file of
their own, PostgreSQL in a database of their own on ``CAROUSEL_TEST_PG`` (default the
machine's server at 127.0.0.1:5432, user postgres), created for the test and dropped
after it (by :mod:`harness.ledgers`, which the fault suite uses too). Without a
PostgreSQL server those cases skip — and fail in CI (``CI=true``), where the server is
part of the machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa

from harness.ledgers import PG, fresh_pg_database, pg_answers
from shared.db import write_lock_first
from shared.models import FINISHED, Key, MappingDelta, Status, VmEventMessage
from shared.store import Accepted, Store, events, hosts, keys, mapping_version, vms

KINDS = ["sqlite", "postgresql"]

T = TypeVar("T")


@contextmanager
def fresh_ledger_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty ledger of ``kind``, removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if not pg_answers():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no PostgreSQL at {PG} (CI runs the ledger tests on it)")
        pytest.skip(f"no PostgreSQL at {PG}")
    with fresh_pg_database() as url:
        yield url


#: the stamps :func:`pass_time` moves, per table
_STAMPS = {
    "events": [
        "accepted_at",
        "dispatched_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
        "dead_at",
    ],
    "leases": ["expires_at"],
    "dispatcher_shards": ["expires_at", "started_at"],
    "dispatcher_share_tables": ["made_at"],
}


def pass_time(engine: sa.Engine, seconds: float) -> None:
    """Let ``seconds`` pass on the ledger's clock, as far as its rows can tell: every
    stamp moves that far into the past, so claims and leases expire and finished events
    age as they would have. (Leases are stamped and judged by the database's own clock,
    which a test cannot set.)"""
    with engine.begin() as conn:
        for table, columns in _STAMPS.items():
            moved = ", ".join(f"{c} = {c} - :s" for c in columns)
            conn.execute(sa.text(f"UPDATE {table} SET {moved}"), {"s": seconds})


# -- what only the tests do to a ledger (the services go through admit, claim, finish...) --
def accept(
    store: Store, batch: Sequence[VmEventMessage], coalesce: Collection[str] = ()
) -> Accepted:
    """Record ``batch`` as pending, as the producer's admit does, without its keys (on
    SQLite with the write lock taken first, as admit does)."""
    with store.engine.begin() as conn:
        write_lock_first(conn)
        return store.record_pending(conn, batch, coalesce)


def ensure_keys(store: Store, new_keys: Iterable[Key]) -> list[MappingDelta]:
    """Add the keys not yet in the mapping (first appearance fixes their order), one
    mapping version and one ``key_added`` change each."""
    deltas: list[MappingDelta] = []
    with store.engine.begin() as conn:
        for key in dict.fromkeys(new_keys):
            if conn.execute(
                sa.select(keys.c.seq).where(
                    keys.c.host == key.host, keys.c.vm == key.vm, keys.c.policy == key.policy
                )
            ).first():
                continue
            if not conn.execute(sa.select(hosts.c.seq).where(hosts.c.host == key.host)).first():
                conn.execute(hosts.insert().values(host=key.host, available=True))
            if not conn.execute(
                sa.select(vms.c.seq).where(vms.c.host == key.host, vms.c.vm == key.vm)
            ).first():
                conn.execute(vms.insert().values(host=key.host, vm=key.vm, available=True))
            conn.execute(keys.insert().values(host=key.host, vm=key.vm, policy=key.policy))
            conn.execute(mapping_version.update().values(version=mapping_version.c.version + 1))
            version = int(conn.execute(sa.select(mapping_version.c.version)).scalar_one())
            deltas.append(
                MappingDelta(
                    version=version, op="key_added", host=key.host, vm=key.vm, policy=key.policy
                )
            )
    return deltas


def unfinished_count(store: Store, host: str, vm: str) -> int:
    """Events of the VM accepted and not finished (``pending`` rows do not count)."""
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(events)
                .where(
                    events.c.host == host,
                    events.c.vm == vm,
                    events.c.status.notin_([s.value for s in (*FINISHED, Status.PENDING)]),
                )
            ).scalar_one()
        )


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Run ``calls`` in threads released together (a barrier); their results in order.
    An exception of one is raised here."""
    start = threading.Barrier(len(calls))
    results: list[T | BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait(10)
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]
