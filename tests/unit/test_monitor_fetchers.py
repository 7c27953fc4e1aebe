"""Tests for producer.monitoring.fetchers: reading simcloud's list (pure, no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from producer.monitoring.fetchers import read_state
from producer.monitoring.model import HostState, View, VmState
from producer.monitoring.updater import apply, diff
from simcloud.model import Cloud


def body(**kw: Any) -> bytes:
    state: dict[str, Any] = {
        "incarnation": "i1",
        "resource_version": 7,
        "hosts": [{"name": "h1", "state": "UP", "version": 1}],
        "vms": [],
        "groups": [],
    }
    state.update(kw)
    return json.dumps(state).encode()


def vm(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "host": "h1", "state": "ACTIVE", "cpu": 0.1, "ram": 0.2, **kw}


def test_a_list_is_a_full_observation_with_its_version_and_incarnation() -> None:
    listing = read_state(body(vms=[vm("a", version=3, group="web")]))
    assert (listing.resource_version, listing.incarnation) == (7, "i1")
    obs = listing.observation
    assert obs.full and obs.bad == 0
    assert obs.hosts[0].state == HostState.UP
    (a,) = obs.vms
    assert (a.vm, a.host, a.state, a.cpu, a.ram, a.group, a.version) == (
        "a",
        "h1",
        VmState.ACTIVE,
        0.1,
        0.2,
        "web",
        3,
    )


def test_a_state_the_model_does_not_know_is_unknown_and_a_bad_record_is_skipped() -> None:
    listing = read_state(
        body(
            vms=[
                vm("a", state="SHELVED", version=1),
                vm("b", state=["ACTIVE"], version=2),  # unreadable: counted, skipped
                vm("c", cpu=1.5, version=3),  # outside 0..1
                vm("d", version=4),
            ]
        )
    )
    assert [(r.vm, r.state) for r in listing.observation.vms] == [
        ("a", VmState.UNKNOWN),
        ("d", VmState.ACTIVE),
    ]
    assert listing.observation.bad == 2


def test_the_vms_of_a_host_share_one_string_for_its_name() -> None:
    """A large cloud's view keeps a host's name once, not once per VM."""
    a, b = read_state(body(vms=[vm("a", version=1), vm("b", version=2)])).observation.vms
    assert a.host is b.host


@pytest.mark.parametrize("text", [b"not json", b"[]", b'{"hosts": []}'])
def test_an_answer_that_is_not_a_list_raises(text: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        read_state(text)


def test_a_relist_of_a_large_unchanged_cloud_writes_nothing() -> None:
    """simcloud's own list of 20,000 VMs, twice: the first writes every record, the
    second (nothing changed) none. (``make bench BENCH=monitoring`` counts the rows a
    relist writes at 100,000, through the real processes.)"""
    cloud = Cloud(incarnation="i1")
    cloud.seed_inventory(1_000, 20)
    content = json.dumps(cloud.snapshot()).encode()
    view = View()
    first = read_state(content).observation
    d = diff(view, first)
    apply(view, d, first.at)
    assert d.writes == 21_000 and len(view.vms) == 20_000
    again = read_state(content).observation
    d = diff(view, again)
    assert (d.writes, d.changes, d.touch_vms, d.rewound) == (0, [], [], 0)
