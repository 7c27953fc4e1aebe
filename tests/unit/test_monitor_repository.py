"""The monitoring repository: a round trip through the ledger's database, only what
changed written, one source's rows apart from another's; and simcloud's records parsed
one by one (a bad one is skipped and counted, the others stand)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from producer.monitoring import updater
from producer.monitoring.fetchers import changes_to_observation, parse_objects
from producer.monitoring.model import (
    Diff,
    GroupRecord,
    HostRecord,
    HostState,
    Observation,
    View,
    VmRecord,
    VmState,
)
from producer.monitoring.repository import Repository, monitor_vms
from shared.db import make_engine


@pytest.fixture
def repo(ledger_url: str) -> Iterator[Callable[..., Repository]]:
    """Opens repositories on the test's ledger (SQLite, then PostgreSQL: the ledger_url
    fixture), each on an engine of its own, all disposed after the test."""
    engines: list[sa.Engine] = []

    def make(source: str = "sim") -> Repository:
        engines.append(make_engine(ledger_url))
        r = Repository(engines[-1], source)
        r.create_schema()
        return r

    yield make
    for engine in engines:
        engine.dispose()


def vm(name: str, state: VmState = VmState.ACTIVE, version: int = 1) -> VmRecord:
    return VmRecord(name, "h1", state, 0.5, 0.25, "web", version)


def test_a_diff_written_loads_back_as_the_view(repo: Callable[..., Repository]) -> None:
    r = repo()
    view = View(since={"a": 10.0, "b": 11.0})
    diff = Diff(
        upsert_vms=[vm("a"), vm("b", VmState.DOWN)],
        upsert_hosts=[HostRecord("h1", HostState.MAINTENANCE, 3)],
        upsert_groups=[GroupRecord("web", 1, 5, 2)],
    )
    assert r.write(diff, view) == 4
    loaded = r.load()
    assert loaded.vms == {"a": vm("a"), "b": vm("b", VmState.DOWN)}
    assert loaded.since == {"a": 10.0, "b": 11.0}
    assert loaded.members == {"web": {"a", "b"}}
    assert loaded.hosts["h1"].state is HostState.MAINTENANCE
    assert loaded.groups["web"] == GroupRecord("web", 1, 5, 2)


def test_an_empty_diff_writes_nothing_and_deletes_remove_rows(
    repo: Callable[..., Repository],
) -> None:
    r = repo()
    r.write(Diff(upsert_vms=[vm(f"v{i}") for i in range(1200)]), View())
    assert r.write(Diff(), View()) == 0
    r.write(Diff(upsert_vms=[vm("v1", VmState.DOWN, 2)], delete_vms=["v2", "v3"]), View())
    loaded = r.load()
    assert len(loaded.vms) == 1198
    assert loaded.vms["v1"].state is VmState.DOWN


def test_sources_do_not_see_each_other(repo: Callable[..., Repository]) -> None:
    a, b = repo("a"), repo("b")
    a.write(Diff(upsert_vms=[vm("x")]), View())
    b.write(Diff(upsert_vms=[vm("x", VmState.DOWN)], delete_vms=[]), View())
    assert a.load().vms["x"].state is VmState.ACTIVE
    with a.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(monitor_vms)).scalar() == 2


def test_one_bad_record_is_skipped_and_counted() -> None:
    good = {
        "name": "v1",
        "host": "h1",
        "state": "DOWN",
        "cpu": 0.2,
        "ram": 0.1,
        "group": None,
        "version": 4,
    }
    hosts, vms, groups, bad = parse_objects(
        [{"name": "h1", "state": "UP", "version": 1}, {"name": "h2", "state": "ON FIRE"}],
        [
            good,
            {**good, "name": "v2", "cpu": 7},
            {"host": "h1"},
            {**good, "name": "v3", "state": "SHELVED"},
        ],
        [{"name": "web", "min": 1, "max": "x", "version": 1}],
    )
    assert [h.host for h in hosts] == ["h1"]
    assert [(v.vm, v.state) for v in vms] == [("v1", VmState.DOWN), ("v3", VmState.UNKNOWN)]
    assert groups == ()
    assert bad == 4


def test_stream_entries_become_one_delta() -> None:
    obs = changes_to_observation(
        [
            {
                "kind": "vm",
                "type": "upsert",
                "version": 5,
                "object": {
                    "name": "v1",
                    "host": "h1",
                    "state": "ACTIVE",
                    "cpu": 0,
                    "ram": 0,
                    "group": None,
                    "version": 5,
                },
            },
            {"kind": "vm", "type": "delete", "version": 6, "object": {"name": "v9"}},
            {"kind": "host", "type": "delete", "version": 7, "object": {"name": "h4"}},
            {"nonsense": True},
        ]
    )
    assert not obs.full
    assert [v.vm for v in obs.vms] == ["v1"]
    assert (obs.gone_vms, obs.gone_hosts, obs.bad) == (("v9",), ("h4",), 1)


def test_a_restarted_source_s_list_replaces_the_restored_view(
    repo: Callable[..., Repository],
) -> None:
    """The README's case: h1 remembered in MAINTENANCE (empty) with higher versions than
    the restarted cloud's list, which has h1 UP with its VM: the list is the view, in
    memory and once loaded again (a restarted producer sees no version go back again)."""
    r = repo()
    before = Observation(
        100.0, True, (HostRecord("h1", HostState.MAINTENANCE, 20),), (vm("a", version=21),)
    )
    view = r.load()
    d = updater.diff(view, before)
    updater.apply(view, d, before.at)
    r.write(d, view)
    restarted = Observation(200.0, True, (HostRecord("h1", HostState.UP, 1),), (vm("a"),))
    view = r.load()
    d = updater.diff(view, restarted)
    updater.apply(view, d, restarted.at)
    assert d.rewound == 2 and r.write(d, view) == 2
    for seen in (view, r.load()):
        assert seen.hosts == {"h1": HostRecord("h1", HostState.UP, 1)}
        assert seen.vms == {"a": vm("a")}
    again = updater.diff(r.load(), restarted)
    assert again.rewound == 0 and again.writes == 0 and again.changes == []
