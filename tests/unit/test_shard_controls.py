"""Live changes of limits, classes and weights told to one dispatcher shard reach every
shard (scheduler.dispatcher.controls over shared.control_log), on SQLite and
PostgreSQL: each shard with an engine, a state and an admin API of its own, as separate
processes would have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scheduler.dispatcher.admin import create_admin_app
from scheduler.dispatcher.controls import SharedControls, Target, apply
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.shards import Coordinator
from scheduler.dispatcher.state import DispatcherState
from shared import control_log
from tests.asgi import call
from tests.ledgers import pass_time
from tests.unit.admin_doubles import FakeSession

SETTINGS = DispatcherSettings(max_parallel=6, per_vm_limit=1, action_limits="migrate=2")


@dataclass
class Shard:
    coordinator: Coordinator
    state: DispatcherState[Any]
    target: Target

    def round(self) -> None:
        for told in self.coordinator.observe(0, 0).controls:
            apply(self.target, told.section, told.body)


def _shard(engine: sa.Engine, name: str) -> Shard:
    coordinator = Coordinator(engine, name, 4, 60.0, SETTINGS.max_parallel)
    state: DispatcherState[Any] = DispatcherState(
        Dispatcher(Limits(0, SETTINGS.per_vm_limit, 0), named=SETTINGS.named_limits)
    )

    def set_limit(limit: int) -> None:
        coordinator.limit = limit

    target = Target(state, SETTINGS, lambda: coordinator.limit, set_limit)
    return Shard(coordinator, state, target)


def test_a_change_told_to_one_shard_reaches_the_other_at_its_next_round(
    engines: list[sa.Engine],
) -> None:
    a, b = _shard(engines[0], "a"), _shard(engines[1], "b")
    a.round()
    b.round()
    app = create_admin_app(a.state, FakeSession(), controls=SharedControls(a.target, engines[0]))
    said = call(app, "PUT", "/limits", json={"max_parallel": 9, "per_vm": 2})
    assert said.status_code == 200 and said.json()["max_parallel"] == 9  # the global limit
    assert a.coordinator.limit == 9 and a.state.stats()["limits"]["per_vm"] == 2
    for path, body in [
        ("/limits/named", {"actions": {"migrate": 5}, "default_group_budget": 3}),
        ("/classes", {"policies": {"upgrade": "background"}}),
        ("/weights", {"hosts": {"h1": 4}}),
    ]:
        assert call(app, "PUT", path, json=body).status_code == 200, path
    assert b.coordinator.limit == 6  # not yet: at its next round
    b.round()
    assert b.coordinator.limit == 9 and b.state.stats()["limits"]["per_vm"] == 2
    assert b.state.named_limits()["actions"]["migrate"]["limit"] == 5
    assert b.state.named_limits()["default_group_budget"] == 3
    assert b.state.classes()["policies"] == {"upgrade": "background"}
    assert dict(b.state.weights().hosts) == {"h1": 4}
    assert not b.coordinator.observe(0, 0).controls  # each change is read once


def test_a_refused_change_is_not_logged(engines: list[sa.Engine]) -> None:
    a = _shard(engines[0], "a")
    a.round()
    app = create_admin_app(a.state, FakeSession(), controls=SharedControls(a.target, engines[0]))
    body = {"min_shares": {"urgent": 0.7, "background": 0.6}}
    assert call(app, "PUT", "/classes", json=body).status_code == 409
    assert call(app, "PUT", "/limits", json={"max_parallel": 0}).status_code == 422
    with engines[0].begin() as conn:
        assert [c.section for c in control_log.since(conn, 0)] == [control_log.RESET]


def test_the_first_shard_of_a_cluster_goes_back_to_the_settings(
    engines: list[sa.Engine],
) -> None:
    a = _shard(engines[0], "a")
    a.round()
    app = create_admin_app(a.state, FakeSession(), controls=SharedControls(a.target, engines[0]))
    assert call(app, "PUT", "/limits", json={"max_parallel": 11}).status_code == 200
    late = _shard(engines[1], "late")
    late.round()  # a joiner applies the whole log
    assert late.coordinator.limit == 11
    pass_time(engines[2], 120)  # every shard gone: the next one starts a cluster afresh
    again = _shard(engines[2], "again")
    again.round()
    assert again.coordinator.limit == SETTINGS.max_parallel
    a.round()  # one that lived on through the gap goes back to its settings too
    assert a.coordinator.limit == SETTINGS.max_parallel
    assert a.state.named_limits()["actions"]["migrate"]["limit"] == 2


def test_two_shards_appending_at_once_get_two_versions(engines: list[sa.Engine]) -> None:
    import threading

    versions: list[int] = []
    barrier = threading.Barrier(2)

    def tell(engine: sa.Engine, n: int) -> None:
        barrier.wait()
        for i in range(10):
            with engine.begin() as conn:
                versions.append(control_log.append(conn, "limits", {"per_vm": n * 100 + i}))

    threads = [threading.Thread(target=tell, args=(e, n)) for n, e in enumerate(engines[:2])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(1, 21))
