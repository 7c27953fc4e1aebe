"""Tests for producer.monitoring.updater: diffing observations against the view (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from producer.monitoring.model import (
    Diff,
    GroupRecord,
    HostRecord,
    HostState,
    HostStateChanged,
    Observation,
    UtilisationChanged,
    View,
    VmRecord,
    VmState,
    VmStateChanged,
)
from producer.monitoring.updater import apply, diff


def vm(name: str = "vm1", **kw: Any) -> VmRecord:
    fields: dict[str, Any] = {
        "vm": name,
        "host": "h1",
        "state": VmState.ACTIVE,
        "cpu": 0.5,
        "ram": 0.5,
        "group": None,
        "version": 1,
    }
    fields.update(kw)
    return VmRecord(**fields)


def obs(*vms: VmRecord, at: float = 100.0, full: bool = True, **kw: Any) -> Observation:
    return Observation(at=at, full=full, vms=vms, **kw)


def step(view: View, o: Observation) -> Diff:
    """Diff then apply, as the runner does."""
    d = diff(view, o)
    apply(view, d, o.at)
    return d


def test_new_vm_is_reported_and_written() -> None:
    view = View()
    d = step(view, obs(vm(version=3)))
    assert d.changes == [
        VmStateChanged("vm1", "h1", None, VmState.ACTIVE, None, 3, 100.0),
        UtilisationChanged("vm1", "h1", None, 0.5, 0.5, 3, 100.0),
    ]
    assert d.upsert_vms == [vm(version=3)]
    assert view.vms["vm1"] == vm(version=3)
    assert view.since == {"vm1": 100.0}


def test_equal_record_is_a_no_op() -> None:
    view = View()
    step(view, obs(vm()))
    d = diff(view, obs(vm(), at=200.0))
    assert d.changes == [] and d.writes == 0 and d.touch_vms == [] and d.stale == 0


def test_stale_and_out_of_order_stream_records_are_ignored() -> None:
    view = View()
    web = GroupRecord("web", 1, 3, 5)
    step(view, obs(vm(version=5), hosts=(HostRecord("h1", HostState.UP, 5),), groups=(web,)))
    old = obs(
        vm(version=4, state=VmState.DOWN),
        hosts=(HostRecord("h1", HostState.MAINTENANCE, 4),),
        groups=(GroupRecord("web", 1, 2, 4),),
        full=False,
        at=200.0,
    )
    d = step(view, old)
    assert d.stale == 3 and d.rewound == 0
    assert d.changes == [] and d.writes == 0
    assert view.vms["vm1"].state == VmState.ACTIVE
    assert view.hosts["h1"].state == HostState.UP
    assert view.groups["web"].max == 3


H1_MAINTENANCE_V20 = (HostRecord("h1", HostState.MAINTENANCE, 20),)
H1_UP_V1 = (HostRecord("h1", HostState.UP, 1),)


@pytest.mark.parametrize(
    ("remembered", "listed", "changes", "rewound"),
    [
        # the README's case: h1 emptied by maintenance, then the cloud restarted: h1 UP
        # again with its VM, every version lower than the view's
        (
            obs(vm(host="h2", version=21), hosts=H1_MAINTENANCE_V20),
            obs(vm(version=2), hosts=H1_UP_V1, at=200.0),
            [
                VmStateChanged("vm1", "h1", VmState.ACTIVE, VmState.ACTIVE, "h2", 2, 200.0),
                HostStateChanged("h1", HostState.MAINTENANCE, HostState.UP, 1, 200.0),
            ],
            2,
        ),
        # a host remembered DOWN with its VM, the restarted cloud has both up
        (
            obs(vm(state=VmState.DOWN, version=30), hosts=(HostRecord("h1", HostState.DOWN, 29),)),
            obs(vm(version=2), hosts=H1_UP_V1, at=200.0),
            [
                VmStateChanged("vm1", "h1", VmState.DOWN, VmState.ACTIVE, None, 2, 200.0),
                HostStateChanged("h1", HostState.DOWN, HostState.UP, 1, 200.0),
            ],
            2,
        ),
        # a restored database: same states, older versions: no change, but the versions
        # are taken (and written, so a restarted producer does not see them go back again)
        (
            obs(vm(version=30), hosts=(HostRecord("h1", HostState.UP, 29),)),
            obs(vm(version=2), hosts=H1_UP_V1, at=200.0),
            [],
            2,
        ),
        # the same incarnation, newer versions: an ordinary relist
        (
            obs(vm(version=2), hosts=H1_UP_V1),
            obs(vm(version=3, state=VmState.DOWN), hosts=H1_UP_V1, at=200.0),
            [VmStateChanged("vm1", "h1", VmState.ACTIVE, VmState.DOWN, None, 3, 200.0)],
            0,
        ),
    ],
)
def test_a_full_list_replaces_the_view_whatever_its_versions(
    remembered: Observation, listed: Observation, changes: list[object], rewound: int
) -> None:
    view = View()
    step(view, remembered)
    d = step(view, listed)
    assert [c for c in d.changes if not isinstance(c, UtilisationChanged)] == changes
    assert d.rewound == rewound and d.stale == 0
    assert view.vms == {r.vm: r for r in listed.vms}
    assert view.hosts == {h.host: h for h in listed.hosts}
    assert d.writes == (rewound or len(changes))  # each record that moved, written once
    assert d.touch_vms == []
    # the list after it, the same: nothing new, nothing written
    again = diff(view, replace(listed, at=300.0))
    assert again.changes == [] and again.writes == 0 and again.rewound == 0


def test_after_a_restart_the_stream_is_ordered_against_the_new_list() -> None:
    view = View()
    step(view, obs(vm(version=40), hosts=(HostRecord("h1", HostState.MAINTENANCE, 39),)))
    step(view, obs(vm(version=2), hosts=H1_UP_V1, at=200.0))  # the restarted cloud
    maintenance = HostRecord("h1", HostState.MAINTENANCE, 3)
    d = step(view, obs(hosts=(maintenance,), full=False, at=210.0))
    assert d.changes == [HostStateChanged("h1", HostState.UP, HostState.MAINTENANCE, 3, 210.0)]
    d = step(view, obs(vm(version=1, state=VmState.DOWN), full=False, at=220.0))
    assert d.stale == 1 and d.changes == []  # older than the new list's: stale


def test_state_change_and_move() -> None:
    view = View()
    step(view, obs(vm()))
    d = step(view, obs(vm(version=2, state=VmState.DOWN), at=110.0))
    assert d.changes == [VmStateChanged("vm1", "h1", VmState.ACTIVE, VmState.DOWN, None, 2, 110.0)]
    assert view.since["vm1"] == 110.0
    d = step(view, obs(vm(version=3, state=VmState.DOWN, host="h2"), at=120.0))
    assert d.changes == [VmStateChanged("vm1", "h2", VmState.DOWN, VmState.DOWN, "h1", 3, 120.0)]
    assert view.since["vm1"] == 110.0  # the state did not change: still DOWN since 110


def test_utilisation_step() -> None:
    view = View()
    step(view, obs(vm(cpu=0.10)))
    d = step(view, obs(vm(cpu=0.14, version=2)))
    assert d.changes == [] and d.writes == 0  # below the step: not reported, not written
    assert d.touch_vms == [vm(cpu=0.10, version=2)]  # only the version advances in memory
    assert view.vms["vm1"] == vm(cpu=0.10, version=2)
    d = step(view, obs(vm(cpu=0.15, version=3)))  # 0.15 - 0.10 is a step (despite floats)
    assert d.changes == [UtilisationChanged("vm1", "h1", None, 0.15, 0.5, 3, 100.0)]
    assert d.upsert_vms == [vm(cpu=0.15, version=3)]
    d = step(view, obs(vm(cpu=0.15, ram=0.47, version=4)))
    assert d.changes == [] and d.writes == 0
    d = step(view, obs(vm(cpu=0.15, ram=0.44, version=5)))  # the drift adds up to a step
    assert [type(c) for c in d.changes] == [UtilisationChanged]


def test_a_touched_version_guards_against_stale_stream_records() -> None:
    view = View()
    step(view, obs(vm(version=1)))
    step(view, obs(vm(version=7, cpu=0.51)))  # a version-only change: kept in memory
    d = diff(view, obs(vm(version=6, state=VmState.DOWN), full=False))
    assert d.stale == 1 and d.changes == []


def test_group_membership_change_is_written_without_a_change() -> None:
    view = View()
    step(view, obs(vm(group="web")))
    assert view.members == {"web": {"vm1"}}
    d = step(view, obs(vm(group="api", version=2)))
    assert d.changes == [] and d.upsert_vms == [vm(group="api", version=2)]
    assert view.members == {"api": {"vm1"}}


def test_disappeared_vm_is_reported_once_across_two_full_lists() -> None:
    view = View()
    step(view, obs(vm("a", group="web"), vm("b", group="web", host="h2")))
    d = step(view, obs(vm("a", group="web"), at=200.0))
    assert d.changes == [VmStateChanged("b", "h2", VmState.ACTIVE, None, None, 1, 200.0)]
    assert d.delete_vms == ["b"]
    assert "b" not in view.vms and "b" not in view.since
    assert view.members == {"web": {"a"}}
    d = step(view, obs(vm("a", group="web"), at=300.0))
    assert d.changes == [] and d.writes == 0


def test_non_full_observation_deletes_only_what_it_names() -> None:
    view = View()
    step(view, obs(vm("a"), vm("b"), hosts=(HostRecord("h1", HostState.UP, 1),)))
    d = step(view, obs(full=False, gone_vms=("b", "never-seen"), at=200.0))
    assert d.delete_vms == ["b"]
    assert d.changes == [VmStateChanged("b", "h1", VmState.ACTIVE, None, None, 1, 200.0)]
    assert set(view.vms) == {"a"} and "h1" in view.hosts
    d = step(view, obs(full=False, gone_hosts=("h1",), at=300.0))
    assert d.changes == [HostStateChanged("h1", HostState.UP, None, 1, 300.0)]
    assert view.hosts == {} and set(view.vms) == {"a"}


def test_duplicates_in_one_observation_the_highest_version_wins() -> None:
    view = View()
    d = step(view, obs(vm(version=3, cpu=0.3), vm(version=5, cpu=0.9), vm(version=4, cpu=0.1)))
    assert d.upsert_vms == [vm(version=5, cpu=0.9)]
    assert view.vms["vm1"].version == 5


def test_hosts_and_groups() -> None:
    view = View()
    web = GroupRecord("web", 1, 5, 1)
    h1 = HostRecord("h1", HostState.UP, 1)
    d = step(view, Observation(100.0, True, hosts=(h1,), groups=(web,)))
    assert d.changes == [HostStateChanged("h1", None, HostState.UP, 1, 100.0)]
    assert d.upsert_groups == [web]  # a group: written, no change
    d = step(view, Observation(110.0, False, hosts=(replace(h1, version=2),)))
    assert d.changes == [] and d.upsert_hosts == [replace(h1, version=2)]
    maintenance = HostRecord("h1", HostState.MAINTENANCE, 3)
    d = step(view, Observation(120.0, False, hosts=(maintenance,)))
    assert d.changes == [HostStateChanged("h1", HostState.UP, HostState.MAINTENANCE, 3, 120.0)]
    d = step(view, Observation(130.0, False, groups=(replace(web, max=9, version=2),)))
    assert d.changes == [] and d.upsert_groups == [replace(web, max=9, version=2)]
    d = step(view, Observation(140.0, False, groups=(web,)))
    assert d.stale == 1 and d.writes == 0 and view.groups["web"].max == 9
    d = step(view, Observation(150.0, True, hosts=(maintenance,)))
    assert d.delete_groups == ["web"] and d.changes == [] and view.groups == {}
    d = step(view, Observation(160.0, True))
    assert d.changes == [HostStateChanged("h1", HostState.MAINTENANCE, None, 3, 160.0)]
    assert d.delete_hosts == ["h1"] and view.hosts == {}


def test_apply_keeps_since_and_members() -> None:
    view = View()
    step(view, obs(vm("a", group="web"), vm("b", group="web"), at=10.0))
    step(
        view,
        obs(vm("a", group="web", version=2, state=VmState.DOWN), vm("b", group="web"), at=20.0),
    )
    assert view.since == {"a": 20.0, "b": 10.0}
    step(view, obs(vm("a", group="web", version=3, state=VmState.DOWN, host="h9"), at=30.0))
    assert view.since == {"a": 20.0}
    assert view.members == {"web": {"a"}}
    step(view, obs(vm("a", group=None, version=4, state=VmState.DOWN, host="h9"), at=40.0))
    assert view.members == {}


def test_twenty_thousand_unchanged_vms() -> None:
    records = tuple(vm(f"vm-{i}", host=f"h{i % 200}", group=f"g{i % 50}") for i in range(20_000))
    view = View()
    step(view, obs(*records))
    relist = obs(*[replace(r) for r in records], at=200.0)  # equal records, not the same objects
    d = diff(view, relist)
    assert d.changes == [] and d.writes == 0 and d.touch_vms == [] and d.stale == 0
