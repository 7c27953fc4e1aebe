"""The mapping host -> VM -> policy -> queue, kept in the ledger's database with a
version that every change bumps."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shared.db import events, hosts, keys, mapping_version, vms
from shared.models import (
    FINISHED,
    HostView,
    Key,
    MappingDelta,
    MappingSnapshot,
    PolicyView,
    Status,
    VmView,
)


class MappingStore:
    engine: Engine

    # -- mapping -------------------------------------------------------------------
    def _bump(self, conn: sa.Connection) -> int:
        conn.execute(mapping_version.update().values(version=mapping_version.c.version + 1))
        return int(conn.execute(sa.select(mapping_version.c.version)).scalar_one())

    def mapping_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(mapping_version.c.version)).scalar_one())

    def ensure_keys(self, new_keys: Iterable[Key]) -> list[MappingDelta]:
        """Add the keys not yet in the mapping (first appearance fixes their order)."""
        deltas: list[MappingDelta] = []
        with self.engine.begin() as conn:
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
                deltas.append(
                    MappingDelta(
                        version=self._bump(conn),
                        op="key_added",
                        host=key.host,
                        vm=key.vm,
                        policy=key.policy,
                    )
                )
        return deltas

    def set_host_available(self, host: str, available: bool) -> MappingDelta | None:
        with self.engine.begin() as conn:
            res = conn.execute(
                hosts.update().where(hosts.c.host == host).values(available=available)
            )
            if res.rowcount == 0:
                return None
            return MappingDelta(
                version=self._bump(conn), op="host_availability", host=host, available=available
            )

    def set_vm_available(self, host: str, vm: str, available: bool) -> MappingDelta | None:
        with self.engine.begin() as conn:
            res = conn.execute(
                vms.update().where(vms.c.host == host, vms.c.vm == vm).values(available=available)
            )
            if res.rowcount == 0:
                return None
            return MappingDelta(
                version=self._bump(conn),
                op="vm_availability",
                host=host,
                vm=vm,
                available=available,
            )

    def unfinished_count(self, host: str, vm: str) -> int:
        """Events of the VM accepted and not finished. ``pending`` rows do not count:
        by the time the producer asks, no request for the VM is in progress, so they are
        leftovers of a producer that died before the broker confirmed (never accepted)."""
        with self.engine.connect() as conn:
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

    def all_keys(self) -> list[Key]:
        """Every key in the mapping, in first-appearance order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(keys.c.host, keys.c.vm, keys.c.policy).order_by(keys.c.seq)
            ).all()
        return [Key(host=r.host, vm=r.vm, policy=r.policy) for r in rows]

    def remove_vm(self, host: str, vm: str) -> MappingDelta | None:
        with self.engine.begin() as conn:
            res = conn.execute(vms.delete().where(vms.c.host == host, vms.c.vm == vm))
            if res.rowcount == 0:
                return None
            conn.execute(keys.delete().where(keys.c.host == host, keys.c.vm == vm))
            conn.execute(
                events.delete().where(
                    events.c.host == host,
                    events.c.vm == vm,
                    events.c.status == Status.PENDING.value,
                )
            )
            return MappingDelta(version=self._bump(conn), op="vm_removed", host=host, vm=vm)

    def snapshot(self) -> MappingSnapshot:
        with self.engine.connect() as conn:
            version = int(conn.execute(sa.select(mapping_version.c.version)).scalar_one())
            host_rows = conn.execute(sa.select(hosts).order_by(hosts.c.seq)).all()
            vm_rows = conn.execute(sa.select(vms).order_by(vms.c.seq)).all()
            key_rows = conn.execute(sa.select(keys).order_by(keys.c.seq)).all()
            queued = {
                (r.host, r.vm, r.policy): int(r.n)
                for r in conn.execute(
                    sa.select(
                        events.c.host, events.c.vm, events.c.policy, sa.func.count().label("n")
                    )
                    .where(events.c.status == Status.QUEUED.value)
                    .group_by(events.c.host, events.c.vm, events.c.policy)
                )
            }
        out: dict[str, HostView] = {
            h.host: HostView(available=h.available, vms={}) for h in host_rows
        }
        for v in vm_rows:
            if v.host in out:
                out[v.host].vms[v.vm] = VmView(available=v.available, policies={})
        for k in key_rows:
            vm_view = out.get(k.host, HostView(available=True, vms={})).vms.get(k.vm)
            if vm_view is not None:
                vm_view.policies[k.policy] = PolicyView(
                    queued=queued.get((k.host, k.vm, k.policy), 0)
                )
        return MappingSnapshot(version=version, hosts=out)
