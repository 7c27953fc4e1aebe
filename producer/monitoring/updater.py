"""Diffing an observation against the view: what changed, and what to write.

A relist of a large cloud is mostly unchanged, so the common path is one dict lookup and
one record comparison per VM. Only material changes are written: a new VM, a change of
state, host or group, or utilisation moving by at least ``utilisation_step``. A smaller
drift is neither reported nor persisted; the view keeps the last reported figures (and
only advances the version), so a slow drift is measured from them and is reported once
it adds up to a step, instead of creeping by unnoticed.

A full list is the truth at its moment: it replaces the view (as client-go's informers
do), whatever the versions say; diffing it against the view still yields the changes it
implies. A listed record with a lower version than the view's means the source's
versions went backwards — it restarted (simcloud) or its database was restored — and is
taken and counted (``Diff.rewound``), and written even when nothing else changed, so the
repository forgets the versions of the source's former incarnation. Versions order only
the stream's deltas against the list they follow: a delta's record with a lower version
than the view's is stale (counted, ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TypeVar

from producer.monitoring.model import (
    Diff,
    GroupRecord,
    HostRecord,
    HostStateChanged,
    Observation,
    UtilisationChanged,
    View,
    VmRecord,
    VmStateChanged,
)

#: float noise: 0.15 - 0.10 is 0.0499999..., which is a step of 0.05
_EPSILON = 1e-9


def diff(view: View, obs: Observation, utilisation_step: float = 0.05) -> Diff:
    """Compare ``obs`` with ``view``; changes nothing (see :func:`apply`)."""
    out = Diff()
    _diff_vms(view, obs, utilisation_step - _EPSILON, out)
    _diff_hosts(view, obs, out)
    _diff_groups(view, obs, out)
    return out


def apply(view: View, diff: Diff, at: float) -> None:
    """Bring ``view`` up to date with ``diff``; ``at`` starts the ``since`` of each VM
    that is new or changed state."""
    for r in diff.upsert_vms:
        old = view.vms.get(r.vm)
        if old is None or old.state != r.state:
            view.since[r.vm] = at
        if old is not None and old.group != r.group:
            _leave(view, old)
        if r.group is not None:
            view.members.setdefault(r.group, set()).add(r.vm)
        view.vms[r.vm] = r
    for r in diff.touch_vms:
        view.vms[r.vm] = r
    for name in diff.delete_vms:
        gone = view.vms.pop(name, None)
        view.since.pop(name, None)
        if gone is not None:
            _leave(view, gone)
    for h in diff.upsert_hosts:
        view.hosts[h.host] = h
    for host in diff.delete_hosts:
        view.hosts.pop(host, None)
    for g in diff.upsert_groups:
        view.groups[g.group] = g
    for group in diff.delete_groups:
        view.groups.pop(group, None)


R = TypeVar("R", VmRecord, HostRecord, GroupRecord)


def _newest(records: Iterable[R], name: Callable[[R], str]) -> dict[str, R]:
    """One record per name: a name reported twice, the highest version (a tie: the last)."""
    latest: dict[str, R] = {}
    for r in records:
        prev = latest.get(name(r))
        if prev is None or r.version >= prev.version:
            latest[name(r)] = r
    return latest


def _changed(
    latest: Mapping[str, R], known: Mapping[str, R], obs: Observation, out: Diff
) -> Iterator[tuple[R, R | None]]:
    """Each newest record that differs from the known one (None: new), but for the
    stale: a record older than the known one, from a stream, is counted and skipped; a
    full relist is the truth, so there it wins and is counted as a rewind."""
    for name, r in latest.items():
        old = known.get(name)
        if old == r:
            continue
        if old is not None and r.version < old.version:
            if not obs.full:
                out.stale += 1
                continue
            out.rewound += 1
        yield r, old


def _diff_vms(view: View, obs: Observation, step: float, out: Diff) -> None:
    latest = _newest(obs.vms, lambda r: r.vm)
    known = view.vms
    for r, old in _changed(latest, known, obs, out):
        if old is None:
            out.changes.append(VmStateChanged(r.vm, r.host, None, r.state, None, r.version, obs.at))
            out.changes.append(_utilisation(r, obs.at))
            out.upsert_vms.append(r)
            continue
        rewound = r.version < old.version
        moved = r.host != old.host
        if moved or r.state != old.state:
            out.changes.append(
                VmStateChanged(
                    r.vm, r.host, old.state, r.state, old.host if moved else None, r.version, obs.at
                )
            )
        busier = abs(r.cpu - old.cpu) >= step or abs(r.ram - old.ram) >= step
        if busier:
            out.changes.append(_utilisation(r, obs.at))
        if moved or busier or rewound or r.state != old.state or r.group != old.group:
            out.upsert_vms.append(r)
        elif r.version > old.version:
            out.touch_vms.append(replace(old, version=r.version))
    for name in _gone(known, latest, obs.full, obs.gone_vms):
        old = known[name]
        out.changes.append(
            VmStateChanged(name, old.host, old.state, None, None, old.version, obs.at)
        )
        out.delete_vms.append(name)


def _diff_hosts(view: View, obs: Observation, out: Diff) -> None:
    latest = _newest(obs.hosts, lambda h: h.host)
    known = view.hosts
    for h, old in _changed(latest, known, obs, out):
        if old is None or old.state != h.state:
            out.changes.append(
                HostStateChanged(
                    h.host, None if old is None else old.state, h.state, h.version, obs.at
                )
            )
        out.upsert_hosts.append(h)  # hosts are few: a newer version alone is written too
    for name in _gone(known, latest, obs.full, obs.gone_hosts):
        old = known[name]
        out.changes.append(HostStateChanged(name, old.state, None, old.version, obs.at))
        out.delete_hosts.append(name)


def _diff_groups(view: View, obs: Observation, out: Diff) -> None:
    latest = _newest(obs.groups, lambda g: g.group)
    known = view.groups
    out.upsert_groups.extend(g for g, _ in _changed(latest, known, obs, out))
    out.delete_groups.extend(_gone(known, latest, obs.full, obs.gone_groups))


def _gone(
    known: Mapping[str, object], seen: Mapping[str, object], full: bool, named: Iterable[str]
) -> list[str]:
    """Known names absent from a full list, plus those named gone (a name both reported
    and named gone is kept: the next relist settles it)."""
    gone = [n for n in known if n not in seen] if full else []
    listed = set(gone)
    for n in named:
        if n in known and n not in seen and n not in listed:
            gone.append(n)
            listed.add(n)
    return gone


def _utilisation(r: VmRecord, at: float) -> UtilisationChanged:
    return UtilisationChanged(r.vm, r.host, r.group, r.cpu, r.ram, r.version, at)


def _leave(view: View, r: VmRecord) -> None:
    if r.group is None:
        return
    members = view.members.get(r.group)
    if members is not None:
        members.discard(r.vm)
        if not members:
            del view.members[r.group]
