"""Fences: what a dispatcher checks inside a ledger transaction before it acts for some
hosts (marks their events dispatched, sends their tasks again), so that one that lost
its right to them meanwhile — a pause of its process, a network cut longer than its
lease — changes nothing: the check raises :class:`~shared.errors.LeaseLost`, rolling the
transaction back.

A single dispatcher fences with its one lease (:class:`shared.lease.Lease` is a fence for
every host); a dispatcher shard fences with the partition leases it holds
(:class:`PartitionFence`; docs/design.md §7, "Shards").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa

from shared import partition_leases
from shared.errors import LeaseLost


class Fence(Protocol):
    def check(self, conn: sa.Connection, hosts: Collection[str]) -> None:
        """Raise :class:`LeaseLost` unless this process may still act for every one of
        ``hosts``, in the caller's transaction."""


@dataclass(frozen=True)
class PartitionFence:
    """A shard's right to the partitions it holds: ``tokens`` maps each to the fencing
    token it took it with."""

    shard: str
    partitions: int
    tokens: Mapping[int, int]

    def check(self, conn: sa.Connection, hosts: Collection[str]) -> None:
        """Each partition of ``hosts`` once, in ascending order (as every shard takes
        them, so two never wait on each other in a cycle)."""
        for partition in sorted({partition_leases.partition_of(h, self.partitions) for h in hosts}):
            token = self.tokens.get(partition)
            if token is None:
                raise LeaseLost(f"{self.shard} does not hold partition {partition}")
            partition_leases.fence(conn, self.shard, partition, token)
