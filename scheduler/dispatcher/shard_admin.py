"""``GET /shards`` on the dispatcher's admin API: the cluster of dispatcher shards as the
ledger holds it (:func:`shared.shard_view.cluster`), so any shard answers for all of them
and a single dispatcher says it is one (``partitions`` 0, no shards).

A view: it needs the token under the same rule as ``/stats`` (``ADMIN_VIEWS_OPEN``). A
ledger that fails (locked, out of reach) is a 503 with ``Retry-After``, as the
dead-letter routes answer. The body is documented by :class:`ClusterOut`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from shared.db import LEDGER_TROUBLE
from shared.http import LEDGER_DOWN, guarded_router, ledger_down

#: reads the cluster in one ledger transaction (``cluster(conn, DISPATCHER_PARTITIONS)``)
ClusterReader = Callable[[], dict[str, Any]]


class MarkerOut(BaseModel):
    """The ``dispatcher`` lease: held by a single dispatcher, or co-held by the shards
    as holder ``shards``."""

    holder: str | None = Field(description="Who holds it; null when no one does")
    expires_in: float | None = Field(
        description="Seconds left by the ledger's clock; null when no one holds it"
    )
    paused: bool = Field(description="What the holder said; false when no one holds it")


class ShardOut(BaseModel):
    """A live shard, as of its last heartbeat."""

    shard: str
    started_at: float = Field(description="When it joined, epoch seconds (the ledger's clock)")
    expires_in: float = Field(description="Seconds its heartbeat has left (the ledger's clock)")
    demand: int = Field(description="Its hosts with ready work")
    in_flight: int = Field(description="Its events in flight")
    partitions_held: list[int] = Field(description="The partitions whose lease it holds now")
    seen_version: int | None = Field(
        description="The share table it obeys and reported at; null: no report that counts"
    )
    share: int | None = Field(
        description="Its slots in the newest share table; null when it has none"
    )
    url: str | None = Field(
        None, description="Where its admin API answers (DISPATCHER_ADVERTISE_URL)"
    )


class PartitionOut(BaseModel):
    """One partition's lease (``dispatcher/p<i>``)."""

    partition: int
    holder: str | None = Field(description="The shard holding it; null when none does")
    expires_in: float | None = Field(
        description="Seconds left by the ledger's clock; null when no shard holds it"
    )
    token: int | None = Field(
        description="The fencing token of its last tenure; null when never created"
    )


class ShareTableOut(BaseModel):
    version: int
    shares: dict[str, int] = Field(description="Shard -> slots of MAX_PARALLEL")


class ShareTablesOut(BaseModel):
    newest: ShareTableOut | None
    agreed: ShareTableOut | None = Field(
        description="The last version every live shard reported obeying"
    )


class ClusterOut(BaseModel):
    """The cluster of dispatcher shards (empty with ``partitions`` 0: a single dispatcher)."""

    partitions: int = Field(description="DISPATCHER_PARTITIONS; 0: a single dispatcher")
    marker: MarkerOut
    shards: list[ShardOut]
    partition_leases: list[PartitionOut]
    share_tables: ShareTablesOut


def shard_views(read: ClusterReader, token: str) -> APIRouter:
    """GET /shards, answered by ``read``."""
    router = guarded_router(token)

    @router.get("/shards", response_model=ClusterOut, responses=LEDGER_DOWN)
    def get_shards() -> dict[str, Any]:
        """The dispatcher shards as the ledger holds them, whichever shard answers: the
        mode marker (the ``dispatcher`` lease), the live shards with their demand, events
        in flight, partitions held and share, each partition's holder, time left and
        fencing token, and the newest and the agreed share tables."""
        try:
            return read()
        except LEDGER_TROUBLE as exc:
            raise ledger_down(exc) from exc

    return router
