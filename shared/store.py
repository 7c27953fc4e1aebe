"""The ledger of events and the mapping, as one object (one database).

See :mod:`shared.ledger` for the event state machine and :mod:`shared.mapping_store` for
the mapping, :mod:`shared.holding` for what holds a queued event; :mod:`shared.db`
holds the schema.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from shared.db import (
    DEFAULT_POOL,
    Pool,
    events,
    hosts,
    keys,
    make_engine,
    mapping_version,
    vms,
)
from shared.errors import Conflict
from shared.holding import HoldLedger, Holds
from shared.ledger import Accepted, Cancel, Claim, ClaimResult, EventLedger, InFlight
from shared.mapping_store import MappingStore
from shared.migrations import migrate

__all__ = [
    "Accepted",
    "Cancel",
    "Claim",
    "ClaimResult",
    "Conflict",
    "Holds",
    "InFlight",
    "Store",
    "events",
    "hosts",
    "keys",
    "make_engine",
    "mapping_version",
    "vms",
]


class Store(EventLedger, MappingStore, HoldLedger):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def connect(
        cls, url: str, durable: bool = True, pool: Pool = DEFAULT_POOL, migrate: bool = True
    ) -> Store:
        """The ledger at ``url``, its schema brought to the newest migration unless
        ``migrate`` is false (a process whose parent did it: a worker's pool child).
        ``durable`` and ``pool``: see :func:`shared.db.make_engine`."""
        store = cls(make_engine(url, durable, pool))
        if migrate:
            store.create_schema()
        return store

    def create_schema(self) -> None:
        migrate(self.engine)
