"""Tests for scheduler.dispatcher.admin: the admin API's bodies, over HTTP (in process)."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import kombu
import pytest
import schemathesis
from fastapi import FastAPI

from harness.broker import delete_topology
from scheduler.dispatcher.admin import create_admin_app
from scheduler.dispatcher.deadletters import DeadLetters
from scheduler.dispatcher.dispatcher import Dispatcher, Limits
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.dispatcher.state import DispatcherState
from shared.db import make_engine
from shared.models import Action, Key, VmEventMessage
from shared.shard_view import cluster
from shared.store import Store
from shared.topology import Topology
from tests.asgi import call
from tests.fuzz import CONFORMANCE, config, operation
from tests.ledgers import accept, ensure_keys
from tests.unit.admin_doubles import FakeSession
from tests.unit.test_shard_view import PARTITIONS, two_shards


@pytest.fixture
def parts() -> tuple[FastAPI, DispatcherState[Any], threading.Event]:
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(5, 1, 0)))
    session = FakeSession()
    return create_admin_app(state, session), state, session.connected


def test_stats(parts: tuple[FastAPI, DispatcherState[Any], threading.Event]) -> None:
    app, state, connected = parts
    connected.set()
    state.offer(
        VmEventMessage(id="a", host="h", vm="v", policy="p", action=Action.HEAL, accepted_at=0),
        "m",
    )
    assert call(app, "GET", "/stats").json() == {
        "limits": {"max_parallel": 5, "per_vm": 1, "per_host": 0},
        "paused": False,
        "in_flight": 0,
        "held": 1,
        "ready_keys": 1,
        "ready_hosts": 1,
        "dispatched_total": 0,
        "completed_total": 0,
        "hosts": {"h": {"in_flight": 0, "held": 1}},
        "limits_use": {
            "max_parallel": {"limit": 5, "in_use": 0},
            "per_vm": {"limit": 1, "max_in_use": 0, "busiest": None, "at_limit": 0},
            "per_host": {"limit": 0, "max_in_use": 0, "busiest": None, "at_limit": 0},
            "per_action": {},
            "per_group": {},
        },
        "named_limits": {"actions": {}, "groups": {}, "default_group_budget": 0},
        "connected": True,
        "mapping_version": 7,
        "dead_lettered": 0,
        "active": True,
        "parked": 0,
        "resent_total": 0,
        "live_keys": 1,
        "retired_total": 0,
        "ledger_ok": True,
        "standby": False,
        "not_ready": None,
        "mode": "single",
        "shard": None,
    }


def test_pause_resume(parts: tuple[FastAPI, DispatcherState[Any], threading.Event]) -> None:
    app, state, _ = parts
    assert call(app, "POST", "/pause").json() == {"paused": True}
    assert state.stats()["paused"] is True
    assert call(app, "POST", "/resume").json() == {"paused": False}
    assert state.stats()["paused"] is False


def test_limits(parts: tuple[FastAPI, DispatcherState[Any], threading.Event]) -> None:
    app, state, _ = parts
    got = call(app, "PUT", "/limits", json={"per_host": 2})
    assert got.json() == {"max_parallel": 5, "per_vm": 1, "per_host": 2}
    assert state.stats()["limits"] == got.json()
    assert call(app, "PUT", "/limits", json={"per_vm": 0}).status_code == 422
    assert call(app, "PUT", "/limits", json={"other": 1}).status_code == 422


def test_dispatches(parts: tuple[FastAPI, DispatcherState[Any], threading.Event]) -> None:
    app, state, _ = parts
    for i in range(3):
        event = VmEventMessage(
            id=f"e{i}", host="h", vm=f"v{i}", policy="p", action=Action.STOP, accepted_at=0
        )
        state.offer(event, i)
    state.pick_batch(3, lambda: 1.5)
    body = call(app, "GET", "/dispatches", params={"limit": 2}).json()
    assert body == [
        {
            "event_id": f"e{i}",
            "host": "h",
            "vm": f"v{i}",
            "policy": "p",
            "action": "stop",
            "at": 1.5,
            "priority": "normal",
        }
        for i in (1, 2)
    ]
    assert call(app, "GET", "/dispatches", params={"limit": 0}).status_code == 422


def test_ops_routes(parts: tuple[FastAPI, DispatcherState[Any], threading.Event]) -> None:
    app, _, connected = parts
    assert call(app, "GET", "/healthz").json() == {"status": "ok"}
    got = call(app, "GET", "/readyz")
    assert (got.status_code, got.json()) == (503, {"status": "not connected to the broker"})
    connected.set()
    got = call(app, "GET", "/readyz")
    assert (got.status_code, got.json()) == (200, {"status": "ready"})
    call(app, "POST", "/pause")
    metrics = call(app, "GET", "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "carousel_dispatcher_paused 1.0" in metrics.text
    assert "carousel_dispatcher_in_flight 0.0" in metrics.text


def test_with_a_token_the_controls_need_it_and_the_views_stay_open() -> None:
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(5, 1, 0)))
    session = FakeSession(dead_lettered=3)
    app = create_admin_app(state, session, token="s3cret")
    for method, path, body in [
        ("POST", "/pause", None),
        ("POST", "/resume", None),
        ("PUT", "/limits", {"max_parallel": 1}),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = call(app, method, path, json=body, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert refused.headers["www-authenticate"] == "Bearer"
    assert state.stats()["paused"] is False
    assert state.stats()["limits"]["max_parallel"] == 5  # nothing changed
    auth = {"Authorization": "Bearer s3cret"}
    assert call(app, "POST", "/pause", headers=auth).json() == {"paused": True}
    assert call(app, "PUT", "/limits", json={"max_parallel": 1}, headers=auth).status_code == 200
    assert call(app, "GET", "/stats").json()["dead_lettered"] == 3  # views: no token
    assert call(app, "GET", "/dispatches").status_code == 200
    assert "carousel_dispatcher_dead_lettered 3.0" in call(app, "GET", "/metrics").text


def dead_letter(store: Store, event_id: str = "a", vm: str = "v") -> VmEventMessage:
    """An event of ``vm`` accepted (its key in the mapping, as the producer's admit puts
    it), run, and dead-lettered past its time limit."""
    event = VmEventMessage(
        id=event_id, host="h", vm=vm, policy="p", action=Action.HEAL, accepted_at=0
    )
    ensure_keys(store, [event.key])
    accept(store, [event])
    store.confirm([event])
    store.mark_dispatched_many([event_id], "d")
    claim = store.claim(event_id, "d", "w", 30.0)
    store.finish(event_id, claim.token, False, "ran past its time limit", dead=True)
    return event


def test_dead_letters_are_listed_and_a_redrive_needs_the_token(tmp_path: Path) -> None:
    store = Store.connect(f"sqlite:///{tmp_path / 'l.db'}")
    dead_letter(store)
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(5, 1, 0)))
    settings = DispatcherSettings(amqp_url="amqp://guest:guest@127.0.0.1:1//")  # never reached
    app = create_admin_app(state, FakeSession(), "s3cret", DeadLetters(store, settings))
    listed = call(app, "GET", "/dead-letters").json()
    assert [(d["id"], d["error"], d["dead_at"]) for d in listed] == [
        ("a", "ran past its time limit", store.get("a")["dead_at"])  # type: ignore[index]
    ]
    assert call(app, "POST", "/dead-letters/a/redrive").status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert call(app, "POST", "/dead-letters/nope/redrive", headers=auth).status_code == 409
    failed = call(app, "POST", "/dead-letters/a/redrive", headers=auth)  # broker unreachable
    assert (failed.status_code, failed.headers["retry-after"]) == (503, "5")
    row = store.get("a")
    assert row is not None
    assert (row["status"], row["dead_at"] is not None) == ("failed", True)  # as it was
    assert "re-drive failed" in row["error"]
    store.engine.dispose()


def test_with_views_closed_they_need_the_token_too() -> None:
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(5, 1, 0)))
    app = create_admin_app(state, FakeSession(), token="s3cret", views_open=False)
    auth = {"Authorization": "Bearer s3cret"}
    for path in ("/stats", "/dispatches"):
        assert call(app, "GET", path).status_code == 401, path
        assert call(app, "GET", path, headers=auth).status_code == 200, path
    assert call(app, "GET", "/healthz").status_code == 200  # operations stay open


@pytest.fixture
def topology(amqp_url: str) -> Iterator[Topology]:
    """A topology of the test's own on the real broker; its queues deleted afterwards."""
    topology = Topology(f"t{uuid.uuid4().hex[:10]}")
    yield topology
    delete_topology(amqp_url, topology, [Key(host="h", vm=v, policy="p") for v in ("v", "w")])


def queue_depth(amqp_url: str, name: str) -> int | None:
    """Messages in queue ``name``; None if there is no such queue."""
    with kombu.Connection(amqp_url) as conn:
        try:
            return int(conn.channel().queue_declare(name, passive=True).message_count)
        except amqp.exceptions.NotFound:
            return None


def test_a_dead_letter_whose_vm_was_removed_is_refused_and_its_queue_not_declared(
    ledger_url: str, amqp_url: str, topology: Topology
) -> None:
    """Re-driving it would declare the removed VM's queue again, where no dispatcher
    consumes it: 409 naming why, nothing changes, no queue appears. Once an event for
    the VM brought it back, the same re-drive goes through."""
    store = Store.connect(ledger_url)
    event = dead_letter(store)
    dead_letter(store, "b", vm="w")  # another VM's: re-drivable
    settings = DispatcherSettings(amqp_url=amqp_url, carousel_prefix=topology.prefix)
    app = create_admin_app(
        DispatcherState(Dispatcher(Limits(5, 1, 0))),
        FakeSession(),
        "",
        DeadLetters(store, settings),
    )
    queue = topology.event_queue_name(event.key)
    assert store.remove_vm("h", "v") is not None
    before = store.get("a")
    refused = call(app, "POST", "/dead-letters/a/redrive")
    assert refused.status_code == 409, refused.text
    assert "was removed" in refused.json()["detail"]
    assert store.get("a") == before
    assert [d["id"] for d in call(app, "GET", "/dead-letters").json()] == ["b", "a"]  # newest first
    assert queue_depth(amqp_url, queue) is None
    assert call(app, "POST", "/dead-letters/b/redrive").status_code == 200
    ensure_keys(store, [event.key])  # an event for the VM brought it back
    assert call(app, "POST", "/dead-letters/a/redrive").json() == {"id": "a", "status": "queued"}
    assert queue_depth(amqp_url, queue) == 1
    store.engine.dispose()


def test_with_the_ledger_down_the_dead_letter_routes_answer_503(tmp_path: Path) -> None:
    """A ledger that cannot be opened (as one unreachable): 503 with Retry-After, as
    documented, never a 500."""
    store = Store(make_engine(f"sqlite:///{tmp_path / 'gone' / 'l.db'}"))
    settings = DispatcherSettings(amqp_url="amqp://guest:guest@127.0.0.1:1//")  # never reached
    app = create_admin_app(
        DispatcherState(Dispatcher(Limits(5, 1, 0))),
        FakeSession(),
        "",
        DeadLetters(store, settings),
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config(token=False))
    for method, path, label in [
        ("POST", "/dead-letters/a/redrive", "POST /dead-letters/{event_id}/redrive"),
        ("GET", "/dead-letters", "GET /dead-letters"),
    ]:
        got = call(app, method, path)
        assert (got.status_code, got.headers.get("retry-after")) == (503, "5"), got.text
        assert "ledger is unavailable" in got.json()["detail"]
        operation(schema, label).Case().validate_response(got, checks=CONFORMANCE)


@pytest.mark.parametrize("event_id", ["%00", "a%00b"])
def test_a_redrive_of_an_id_the_ledger_cannot_hold_is_a_409(ledger_url: str, event_id: str) -> None:
    """PostgreSQL refuses a NUL in text: no such event, as on SQLite (it was a 500)."""
    store = Store.connect(ledger_url)
    settings = DispatcherSettings(amqp_url="amqp://guest:guest@127.0.0.1:1//")  # never reached
    app = create_admin_app(
        DispatcherState(Dispatcher(Limits(5, 1, 0))),
        FakeSession(),
        "",
        DeadLetters(store, settings),
    )
    got = call(app, "POST", f"/dead-letters/{event_id}/redrive")
    assert got.status_code == 409, got.text
    store.engine.dispose()


def test_no_nesting_of_a_limits_body_gets_a_500() -> None:
    """A body nested just under the interpreter's recursion limit was parsed, and the
    422 echoing it could not be rendered (500): every depth is a 4xx now."""
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(5, 1, 0)))
    app = create_admin_app(state, FakeSession())
    limit = sys.getrecursionlimit()
    for depth in range(limit - 120, limit + 10):
        body = '{"per_vm":' + '{"a":' * depth + "{}" + "}" * depth + "}"
        got = call(
            app, "PUT", "/limits", content=body, headers={"content-type": "application/json"}
        )
        assert got.status_code in (400, 422), (depth, got.status_code, got.text[:200])
    assert state.stats()["limits"]["per_vm"] == 1


def test_classes_round_trip(parts: tuple[FastAPI, DispatcherState[Any], threading.Event]) -> None:
    app, state, _ = parts
    got = call(app, "GET", "/classes").json()
    assert got["policies"] == {}
    assert set(got["classes"]) == {"urgent", "normal", "background"}
    body = {"policies": {"auto-heal": "urgent", "upgrade": "background"}}
    changed = call(app, "PUT", "/classes", json=body).json()
    assert changed["policies"] == body["policies"]
    shares = call(app, "PUT", "/classes", json={"min_shares": {"background": 0.25}}).json()
    assert shares["policies"] == body["policies"]  # a table left out is kept
    assert shares["classes"]["background"]["min_share"] == 0.25
    assert shares["classes"]["normal"]["min_share"] == 0.0  # a class left out has none
    assert call(app, "GET", "/classes").json() == shares
    # a policy's class applies to the heads held from then on
    state.offer(
        VmEventMessage(
            id="u", host="h", vm="v", policy="upgrade", action=Action.UPGRADE, accepted_at=0
        ),
        "m",
    )
    assert call(app, "GET", "/classes").json()["classes"]["background"]["held"] == 1


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"policies": {"auto-heal": "asap"}}, "policies", 422),
        ({"policies": {"bad name": "urgent"}}, "policies", 422),
        ({"min_shares": {"background": 1.5}}, "min_shares", 422),
        ({"min_shares": {"later": 0.1}}, "min_shares", 422),
        ({"min_shares": {"normal": 0.6, "background": 0.5}}, "min_shares", 409),
        ({"other": 1}, "other", 422),
    ],
)
def test_bad_classes_are_refused_and_change_nothing(
    parts: tuple[FastAPI, DispatcherState[Any], threading.Event],
    body: dict[str, Any],
    field: str,
    code: int,
) -> None:
    app, _state, _ = parts
    before = call(app, "GET", "/classes").json()
    got = call(app, "PUT", "/classes", json=body)
    assert got.status_code == code, got.text
    assert field in got.text
    assert call(app, "GET", "/classes").json() == before


def test_weights_round_trip(parts: tuple[FastAPI, DispatcherState[Any], threading.Event]) -> None:
    app, state, _ = parts
    assert call(app, "GET", "/weights").json() == {"hosts": {}, "vms": {}, "policies": {}}
    body = {"hosts": {"a": 1, "b": 2, "c": 4}, "vms": {"a/v1": 3}}
    assert call(app, "PUT", "/weights", json=body).json() == {**body, "policies": {}}
    got = call(app, "PUT", "/weights", json={"policies": {"heal": 2.0}}).json()
    assert got == {**body, "policies": {"heal": 2}}
    assert state.weights().vm("a", "v1") == 3 and state.weights().host("c") == 4
    assert call(app, "GET", "/weights").json() == got


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hosts": {"a": 0}}, "hosts"),
        ({"hosts": {"a": 1.5}}, "hosts"),
        ({"hosts": {"a": True}}, "hosts"),
        ({"hosts": {"a": "2"}}, "hosts"),
        ({"hosts": {"a": 10_001}}, "hosts"),
        ({"hosts": {"bad name": 2}}, "hosts"),
        ({"vms": {"novm": 2}}, "vms"),
        ({"vms": {"a/b/c": 2}}, "vms"),
        ({"policies": {"p": -1}}, "policies"),
    ],
)
def test_bad_weights_are_refused_with_422_and_change_nothing(
    parts: tuple[FastAPI, DispatcherState[Any], threading.Event],
    body: dict[str, Any],
    field: str,
) -> None:
    app, _state, _ = parts
    call(app, "PUT", "/weights", json={"hosts": {"x": 3}})
    got = call(app, "PUT", "/weights", json=body)
    assert got.status_code == 422, got.text
    assert any(field in err["loc"] for err in got.json()["detail"]), got.text
    assert call(app, "GET", "/weights").json() == {"hosts": {"x": 3}, "vms": {}, "policies": {}}


def test_classes_and_weights_need_the_token() -> None:
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(5, 1, 0)))
    app = create_admin_app(state, FakeSession(), token="s3cret")
    assert call(app, "PUT", "/weights", json={"hosts": {"a": 2}}).status_code == 401
    assert call(app, "PUT", "/classes", json={"policies": {"p": "urgent"}}).status_code == 401
    assert state.weights().hosts == {} and state.classes()["policies"] == {}
    auth = {"Authorization": "Bearer s3cret"}
    assert call(app, "PUT", "/weights", json={"hosts": {"a": 2}}, headers=auth).status_code == 200
    assert call(app, "GET", "/weights").status_code == 200  # views: no token


def test_settings_give_the_classes_and_weights() -> None:
    settings = DispatcherSettings(
        policy_priorities="auto-heal=urgent, upgrade=background",
        class_min_shares="background=0.1",
        host_weights="a=1,b=2,c=4",
        vm_weights="a/v1=3",
        policy_weights="heal=2",
    )
    assert settings.classes.policies == {"auto-heal": "urgent", "upgrade": "background"}
    assert settings.classes.min_shares == {"background": 0.1}
    assert settings.weights.hosts == {"a": 1, "b": 2, "c": 4}
    assert settings.weights.vms == {("a", "v1"): 3}
    assert settings.weights.policies == {"heal": 2}


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"policy_priorities": "auto-heal=asap"}, "POLICY_PRIORITIES"),
        ({"policy_priorities": "auto-heal"}, "POLICY_PRIORITIES"),
        ({"class_min_shares": "normal=0.7,background=0.5"}, "add up to"),
        ({"class_min_shares": "background=-0.1"}, "background"),
        ({"class_min_shares": "background=lots"}, "CLASS_MIN_SHARES"),
        ({"host_weights": "a=0"}, "HOST_WEIGHTS"),
        ({"host_weights": "a=1,a=2"}, "twice"),
        ({"vm_weights": "v=2"}, "VM_WEIGHTS"),
        ({"policy_weights": "p=1.5"}, "POLICY_WEIGHTS"),
    ],
)
def test_bad_class_and_weight_settings_stop_the_start(env: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        DispatcherSettings(**env)  # type: ignore[arg-type]


def test_waiting_and_limits(parts: tuple[FastAPI, DispatcherState[Any], threading.Event]) -> None:
    app, state, _ = parts
    for i, policy in enumerate(("p", "q")):
        event = VmEventMessage(
            id=f"e{i}", host="h", vm="v", policy=policy, action=Action.STOP, accepted_at=0
        )
        state.offer(event, i)
    state.pick_batch(1, lambda: 1.0)
    body = call(app, "GET", "/waiting/e1").json()
    assert body["known"] == "held"
    assert body["waiting"]["reason"] == "vm_busy"
    assert body["waiting"]["event"] == "e0"
    assert call(app, "GET", "/waiting/e0").json() == {
        "event_id": "e0",
        "known": "in_flight",
        "waiting": None,
    }
    assert call(app, "GET", "/waiting/nope").json()["known"] == "new"
    use = call(app, "GET", "/limits").json()
    assert use["max_parallel"] == {"limit": 5, "in_use": 1}
    assert use["per_vm"]["busiest"] == "h/v"
    classes = call(app, "GET", "/classes").json()
    assert classes["window"] == 1
    assert classes["classes"]["normal"]["dispatched"] == 1
    assert classes["classes"]["normal"]["share"] == 1.0


def test_waiting_needs_the_token_when_views_are_closed() -> None:
    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(5, 1, 0)))
    app = create_admin_app(state, FakeSession(), token="s3cret", views_open=False)
    assert call(app, "GET", "/waiting/x").status_code == 401
    answer = call(app, "GET", "/waiting/x", headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 200


def test_named_limits_round_trip(
    parts: tuple[FastAPI, DispatcherState[Any], threading.Event],
) -> None:
    """PUT /limits/named replaces the tables it names, keeps the others; GET and /stats
    show them with their use."""
    app, state, _ = parts
    got = call(app, "PUT", "/limits/named", json={"actions": {"live_migrate": 2}})
    assert got.status_code == 200, got.text
    assert got.json() == {
        "actions": {"live_migrate": {"limit": 2, "in_flight": 0, "waiting": 0}},
        "groups": {},
        "default_group_budget": 0,
    }
    got = call(app, "PUT", "/limits/named", json={"groups": {"web": 1}, "default_group_budget": 3})
    assert got.json()["actions"]["live_migrate"]["limit"] == 2  # kept
    assert got.json()["groups"] == {"web": {"budget": 1, "in_action": 0, "waiting": 0}}
    for i in range(2):
        state.offer(
            VmEventMessage(
                id=f"w{i}",
                host="h",
                vm=f"web-{i}",
                policy="p",
                action=Action.UPGRADE,
                accepted_at=0,
                group="web",
            ),
            "m",
        )
    assert [h.event.id for h in state.pick_batch(10, lambda: 0.0)] == ["w0"]
    view = call(app, "GET", "/limits/named").json()
    assert view["groups"]["web"] == {"budget": 1, "in_action": 1, "waiting": 1}
    assert call(app, "GET", "/stats").json()["named_limits"] == view
    assert state.limit_holds("h", "web-1", "p") == ["group web budget 1/1"]
    # a budget raised live: the held replica goes at once
    call(app, "PUT", "/limits/named", json={"groups": {"web": 2}})
    assert [h.event.id for h in state.pick_batch(10, lambda: 0.0)] == ["w1"]
    assert call(app, "PUT", "/limits/named", json={"actions": {}}).json()["actions"] == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"actions": {"teleport": 1}}, "actions"),
        ({"actions": {"live_migrate": 0}}, "actions"),
        ({"actions": {"live_migrate": True}}, "actions"),
        ({"groups": {"bad name": 1}}, "groups"),
        ({"groups": {"web": "1"}}, "groups"),
        ({"default_group_budget": -1}, "default_group_budget"),
        ({"default_group_budget": False}, "default_group_budget"),
        ({"other": 1}, "other"),
    ],
)
def test_named_limits_refusals_name_the_field_and_change_nothing(
    parts: tuple[FastAPI, DispatcherState[Any], threading.Event], body: dict[str, Any], field: str
) -> None:
    app, state, _ = parts
    before = state.named_limits()
    got = call(app, "PUT", "/limits/named", json=body)
    assert got.status_code == 422, got.text
    assert field in got.json()["detail"][0]["loc"], got.json()
    assert state.named_limits() == before


def test_shards_view_lists_every_shard_and_partition(ledger_url: str) -> None:
    """``GET /shards``: the cluster read from the ledger (shared.shard_view), documented;
    a view, so with the views closed it needs the token; no reader given, no route."""
    store = Store.connect(ledger_url)
    two_shards(store.engine)

    def read() -> dict[str, Any]:
        with store.engine.begin() as conn:
            return cluster(conn, PARTITIONS)

    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(5, 1, 0)))
    app = create_admin_app(state, FakeSession(), token="s3cret", views_open=False, shards=read)
    assert call(app, "GET", "/shards").status_code == 401
    got = call(app, "GET", "/shards", headers={"Authorization": "Bearer s3cret"})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["partitions"] == PARTITIONS and body["marker"]["holder"] == "shards"
    assert [(s["shard"], s["partitions_held"], s["share"]) for s in body["shards"]] == [
        ("a", [0, 1], 6),
        ("b", [2, 3], 4),
    ]
    assert [p["holder"] for p in body["partition_leases"]] == ["a", "a", "b", "b"]
    assert body["share_tables"]["newest"] == {"version": 1, "shares": {"a": 6, "b": 4}}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config(token=True))
    operation(schema, "GET /shards").Case().validate_response(got, checks=CONFORMANCE)

    opened = create_admin_app(state, FakeSession(), token="s3cret", shards=read)
    assert call(opened, "GET", "/shards").status_code == 200  # views open: no token
    assert call(create_admin_app(state, FakeSession()), "GET", "/shards").status_code == 404
    store.engine.dispose()


def test_with_the_ledger_down_shards_answer_503(tmp_path: Path) -> None:
    """A ledger that cannot be opened: 503 with Retry-After, as documented."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gone' / 'l.db'}")

    def read() -> dict[str, Any]:
        with engine.begin() as conn:
            return cluster(conn, PARTITIONS)

    state: DispatcherState[Any] = DispatcherState(Dispatcher(Limits(5, 1, 0)))
    app = create_admin_app(state, FakeSession(), shards=read)
    got = call(app, "GET", "/shards")
    assert (got.status_code, got.headers.get("retry-after")) == (503, "5"), got.text
    assert "ledger is unavailable" in got.json()["detail"]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config(token=False))
    operation(schema, "GET /shards").Case().validate_response(got, checks=CONFORMANCE)
    engine.dispose()
