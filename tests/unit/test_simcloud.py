"""simcloud: the model with a fake clock (time moves only when a test advances it), and
the HTTP API in-process (httpx's ASGI transport, the app's lifespan entered: its ticker
runs)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from harness.processes import free_port
from simcloud.__main__ import open_door, parser
from simcloud.app import create_app
from simcloud.model import Cloud, Conflict, GroupSpec, Invalid, NotFound, Operation, StaleToken


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    hosts: int = 3, vms: int = 2, groups: tuple[GroupSpec, ...] = (), **kwargs: Any
) -> tuple[Cloud, Clock]:
    clock = Clock()
    cloud = Cloud(clock=clock, **kwargs)
    cloud.seed_inventory(hosts, vms, groups)
    return cloud, clock


def advance(cloud: Cloud, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    cloud.tick()


def state(cloud: Cloud, vm: str) -> str:
    obj = cloud.vm(vm)
    assert obj is not None
    return str(obj["state"])


def web(cloud: Cloud) -> list[dict[str, Any]]:
    return [dict(cloud.vms[n]) for n in cloud.replicas("web")]


WEB = GroupSpec("web", replicas=3, min=1, max=5)


# --- the model: inventory, versions, change log


def test_seeding_makes_hosts_vms_and_round_robin_replicas() -> None:
    cloud, _ = make(hosts=3, vms=2, groups=(WEB,))
    snap = cloud.snapshot()
    assert [h["name"] for h in snap["hosts"]] == ["h1", "h2", "h3"]
    assert {h["state"] for h in snap["hosts"]} == {"UP"}
    names = [v["name"] for v in snap["vms"]]
    assert names[:6] == ["h1-vm1", "h1-vm2", "h2-vm1", "h2-vm2", "h3-vm1", "h3-vm2"]
    assert [(v["name"], v["host"]) for v in web(cloud)] == [
        ("web-1", "h1"),
        ("web-2", "h2"),
        ("web-3", "h3"),
    ]
    vm = cloud.vm("h2-vm1")
    assert vm is not None
    assert {k: vm[k] for k in ("host", "state", "cpu", "ram", "group", "flavor", "image")} == {
        "host": "h2",
        "state": "ACTIVE",
        "cpu": 0.3,
        "ram": 0.4,
        "group": None,
        "flavor": "m1.small",
        "image": "v1",
    }
    assert snap["groups"] == [{"name": "web", "min": 1, "max": 5, "version": 10}]
    # one version per object created, each object stamped with its own
    assert snap["resource_version"] == 3 + 6 + 1 + 3
    versions = [o["version"] for kind in ("hosts", "vms", "groups") for o in snap[kind]]
    assert sorted(versions) == list(range(1, 14))


def test_bad_names_and_duplicates_are_refused() -> None:
    cloud, _ = make()
    with pytest.raises(Invalid):
        cloud.add_vm("-bad", "h1")
    with pytest.raises(Conflict):
        cloud.add_vm("h1-vm1", "h1")
    with pytest.raises(NotFound):
        cloud.add_vm("x", "h9")
    with pytest.raises(Invalid):
        cloud.add_group("g", min=3, max=5, replicas=1)


def test_changes_since_lists_every_mutation_in_order() -> None:
    cloud, _ = make()
    rv = cloud.resource_version
    cloud.vm_down("h1-vm1")
    cloud.host_maintenance("h2")
    cloud.delete_vm("h3-vm2")
    changes = cloud.changes_since(rv)
    assert changes is not None
    assert [(c["kind"], c["type"], c["object"]["name"]) for c in changes] == [
        ("vm", "upsert", "h1-vm1"),
        ("host", "upsert", "h2"),
        ("vm", "delete", "h3-vm2"),
    ]
    assert [c["version"] for c in changes] == [rv + 1, rv + 2, rv + 3]
    assert changes[0]["object"]["state"] == "DOWN"
    assert changes[2]["object"] == {"name": "h3-vm2"}
    assert cloud.changes_since(rv, limit=2) == changes[:2]
    assert cloud.changes_since(cloud.resource_version) == []


def test_a_compacted_or_unknown_version_asks_for_a_relist() -> None:
    cloud, _ = make(log_size=5)
    rv = cloud.resource_version  # 9 changes made, the last 5 kept: versions 5..9
    assert cloud.changes_since(rv - 5) is not None  # just before the oldest kept
    assert len(cloud.changes_since(rv - 5) or []) == 5
    assert cloud.changes_since(rv - 6) is None
    assert cloud.changes_since(0) is None
    assert cloud.changes_since(rv + 1) is None  # a version this cloud never had
    for _ in range(20):  # the log stays bounded as it rolls
        cloud.vm_down("h1-vm1")
        cloud.vm_up("h1-vm1")
    assert len(cloud.changes_since(cloud.resource_version - 5) or []) == 5
    assert cloud.changes_since(cloud.resource_version - 6) is None


def test_a_no_op_fault_changes_nothing_and_bumps_nothing() -> None:
    cloud, _ = make(groups=(WEB,))
    cloud.vm_down("h1-vm1")
    cloud.host_maintenance("h2")
    cloud.set_utilisation(group="web", cpu=0.5)
    rv = cloud.resource_version
    assert not cloud.vm_down("h1-vm1")
    assert not cloud.vm_up("h1-vm2")
    assert not cloud.host_maintenance("h2")
    assert not cloud.host_up("h3")
    assert not cloud.set_utilisation(group="web", cpu=0.5)
    assert not cloud.set_utilisation(vm="h1-vm2", ram=0.4)
    assert cloud.resource_version == rv
    assert cloud.changes_since(rv) == []


# --- actions


def test_each_action_takes_effect_after_its_duration() -> None:
    cloud, clock = make(action_seconds=2.0)
    cloud.vm_down("h1-vm1")
    cloud.vm_down("h1-vm2")
    cloud.start_action("heal", "heal", "h1-vm1")
    cloud.start_action("stop", "stop", "h1-vm2")
    cloud.start_action("pause", "pause", "h2-vm1")
    cloud.start_action("resize", "resize", "h2-vm2")
    cloud.start_action("update", "update", "h3-vm1")
    cloud.start_action("upgrade", "upgrade", "h3-vm2")
    # transitional states at once; nothing else before the time is up
    assert [state(cloud, v) for v in ("h1-vm1", "h2-vm1", "h2-vm2", "h3-vm1", "h3-vm2")] == [
        "DOWN",
        "ACTIVE",
        "RESIZING",
        "UPDATING",
        "UPDATING",
    ]
    advance(cloud, clock, 1.99)
    assert {op.state for op in map(cloud.operation, ["heal", "pause", "resize"]) if op} == {
        "running"
    }
    advance(cloud, clock, 0.01)
    assert [state(cloud, v) for v in ("h1-vm1", "h1-vm2", "h2-vm1")] == [
        "ACTIVE",
        "STOPPED",
        "PAUSED",
    ]
    assert cloud.vms["h2-vm2"]["flavor"] == "m1.medium"
    assert state(cloud, "h2-vm2") == "ACTIVE"
    assert cloud.vms["h3-vm1"]["image"] == "v2" and cloud.vms["h3-vm2"]["image"] == "v2"
    for op_id in ("heal", "stop", "pause", "resize", "update", "upgrade"):
        op = cloud.operation(op_id)
        assert op is not None and op.state == "succeeded", op
        assert op.done_at == clock.now and op.started_at == clock.now - 2.0


@pytest.mark.parametrize("action", ["migrate", "live_migrate"])
def test_a_migration_moves_the_vm_to_the_least_loaded_up_host(action: str) -> None:
    cloud, clock = make(hosts=3, vms=2)
    cloud.add_vm("extra", "h2")  # h3 has the fewest VMs
    op = cloud.start_action("m", action, "h1-vm1")
    assert state(cloud, "h1-vm1") == "MIGRATING"
    advance(cloud, clock, 1.0)
    assert op.state == "succeeded" and op.result == {"host": "h3"}
    assert (cloud.vms["h1-vm1"]["host"], state(cloud, "h1-vm1")) == ("h3", "ACTIVE")
    # a named destination is honoured
    cloud.start_action("m2", action, "h1-vm2", params={"host": "h2"})
    advance(cloud, clock, 1.0)
    assert cloud.vms["h1-vm2"]["host"] == "h2"


def test_durations_per_action_and_per_call_capped_at_an_hour() -> None:
    cloud, clock = make(action_seconds=1.0, per_action_seconds={"pause": 5.0})
    cloud.start_action("p", "pause", "h1-vm1")
    cloud.start_action("s", "stop", "h1-vm2", params={"duration": 0.5})
    cloud.start_action("long", "stop", "h2-vm1", params={"duration": 10_000})
    advance(cloud, clock, 0.5)
    assert state(cloud, "h1-vm2") == "STOPPED"
    advance(cloud, clock, 4.5)
    assert state(cloud, "h1-vm1") == "PAUSED"
    advance(cloud, clock, 3600 - 5.0 - 0.01)
    assert state(cloud, "h2-vm1") == "ACTIVE"
    advance(cloud, clock, 0.01)
    assert state(cloud, "h2-vm1") == "STOPPED"
    with pytest.raises(Invalid):
        cloud.start_action("bad", "stop", "h3-vm1", params={"duration": -1})


def test_an_operation_id_is_idempotent_and_fenced_by_its_token() -> None:
    cloud, clock = make()
    op = cloud.start_action("e1", "migrate", "h1-vm1", token=3)
    rv = cloud.resource_version
    assert cloud.start_action("e1", "migrate", "h1-vm1", token=3) is op
    assert cloud.start_action("e1", "migrate", "h1-vm1", token=4) is op
    assert op.token == 4
    with pytest.raises(StaleToken):
        cloud.start_action("e1", "migrate", "h1-vm1", token=3)
    with pytest.raises(Conflict):
        cloud.start_action("e1", "pause", "h1-vm1", token=4)
    assert cloud.resource_version == rv  # nothing done twice
    advance(cloud, clock, 1.0)
    assert cloud.start_action("e1", "migrate", "h1-vm1", token=4).state == "succeeded"
    advance(cloud, clock, 10.0)
    moves = [c for c in cloud.changes_since(rv) or [] if c["object"].get("name") == "h1-vm1"]
    assert len(moves) == 1  # moved once


def test_unknown_targets_and_actions_are_refused() -> None:
    cloud, _ = make(groups=(WEB,))
    with pytest.raises(NotFound):
        cloud.start_action("a", "heal", "nope")
    with pytest.raises(NotFound):
        cloud.start_action("b", "scale_out", "h1-vm1")  # a group action wants a group
    with pytest.raises(Invalid):
        cloud.start_action("c", "reboot", "h1-vm1")
    assert cloud.operation("a") is None


def test_invalid_actions_fail_with_a_clear_error() -> None:
    cloud, _ = make(hosts=2)
    cloud.host_maintenance("h2")
    op = cloud.start_action("m", "migrate", "h1-vm1")
    assert (op.state, op.error) == ("failed", "no other UP host to move VM h1-vm1 to")
    assert state(cloud, "h1-vm1") == "ACTIVE"
    cloud.start_action("r", "resize", "h1-vm2", params={"flavor": "m1.large"})
    busy = cloud.start_action("busy", "pause", "h1-vm2")
    assert busy.state == "failed" and "RESIZING" in (busy.error or "")
    cloud.vm_down("h2-vm1")
    assert cloud.start_action("p", "pause", "h2-vm1").error == "cannot pause VM h2-vm1: it is DOWN"
    cloud.host_down("h1")
    stop = cloud.start_action("s", "stop", "h1-vm1")
    assert stop.state == "failed" and "host h1 is DOWN" in (stop.error or "")


def test_a_vm_deleted_or_faulted_during_its_operation_fails_it_cleanly() -> None:
    cloud, clock = make()
    gone = cloud.start_action("a", "resize", "h1-vm1")
    hit = cloud.start_action("b", "live_migrate", "h1-vm2")
    paused = cloud.start_action("c", "pause", "h2-vm1")
    cloud.delete_vm("h1-vm1")
    cloud.add_vm("h1-vm1", "h1")  # another VM under the same name
    cloud.vm_down("h1-vm2")
    cloud.flap("h2-vm1", 0.5)
    advance(cloud, clock, 1.0)
    assert (gone.state, gone.error) == ("failed", "VM h1-vm1 was deleted while resize ran")
    assert (hit.state, hit.error) == ("failed", "VM h1-vm2 became DOWN while live_migrate ran")
    assert state(cloud, "h1-vm2") == "DOWN" and cloud.vms["h1-vm2"]["host"] == "h1"
    assert paused.state == "succeeded"  # the flap was over: ACTIVE again, as at the start
    assert state(cloud, "h1-vm1") == "ACTIVE" and cloud.vms["h1-vm1"]["flavor"] == "m1.small"


# --- groups


def test_scaling_stays_within_min_and_max() -> None:
    cloud, clock = make(groups=(WEB,))
    ops = [cloud.start_action(f"out{i}", "scale_out", "web") for i in range(3)]
    assert {op.state for op in ops} == {"running"}  # 3 of 5: all may start
    advance(cloud, clock, 1.0)
    assert [op.state for op in ops] == ["succeeded", "succeeded", "failed"]
    assert ops[2].error == "group web is at its maximum of 5 replicas"
    assert [v["name"] for v in web(cloud)] == ["web-1", "web-2", "web-3", "web-4", "web-5"]
    at_max = cloud.start_action("out9", "scale_out", "web")
    assert at_max.state == "failed" and at_max.done_at == clock.now  # at once
    for i in range(5):
        cloud.start_action(f"in{i}", "scale_in", "web")
        advance(cloud, clock, 1.0)
    assert [v["name"] for v in web(cloud)] == ["web-1"]
    last = cloud.operation("in4")
    assert last is not None and last.state == "failed"
    assert cloud.start_action("in9", "scale_in", "web").error == (
        "group web is at its minimum of 1 replicas"
    )


def test_scaling_spreads_the_groups_load() -> None:
    cloud, clock = make(hosts=2, vms=1, groups=(GroupSpec("web", 2, 1, 3),))
    cloud.set_utilisation(group="web", cpu=0.9)
    out = cloud.start_action("o", "scale_out", "web")
    advance(cloud, clock, 1.0)
    assert out.result["vm"] == "web-3"
    assert [v["cpu"] for v in web(cloud)] == [0.6, 0.6, 0.6]  # 1.8 over 3
    new = cloud.vm("web-3")
    assert new is not None and new["state"] == "ACTIVE" and new["group"] == "web"
    cloud.start_action("i", "scale_in", "web")  # the newest goes
    advance(cloud, clock, 1.0)
    assert [(v["name"], v["cpu"]) for v in web(cloud)] == [("web-1", 0.9), ("web-2", 0.9)]
    cloud.start_action("i2", "scale_in", "web")
    advance(cloud, clock, 1.0)
    assert [v["cpu"] for v in web(cloud)] == [1.0]  # 1.8 on one replica: saturated
    cloud.start_action("o2", "scale_out", "web")
    advance(cloud, clock, 1.0)
    assert [v["name"] for v in web(cloud)] == ["web-1", "web-4"]  # a fresh name


def test_scale_out_places_the_replica_on_the_least_loaded_up_host() -> None:
    cloud, clock = make(hosts=3, vms=2, groups=(WEB,))
    cloud.add_vm("x1", "h1")
    cloud.add_vm("x2", "h2")
    cloud.host_down("h3")
    op = cloud.start_action("o", "scale_out", "web")
    advance(cloud, clock, 1.0)
    assert op.result["vm"] == "web-4" and op.result["host"] in ("h1", "h2")  # 4 VMs each


# --- faults


def test_host_down_takes_its_vms_down_and_heal_evacuates_them() -> None:
    cloud, clock = make(hosts=3, vms=2)
    cloud.host_down("h1")
    assert cloud.hosts["h1"]["state"] == "DOWN"
    assert [state(cloud, v) for v in ("h1-vm1", "h1-vm2", "h2-vm1")] == ["DOWN", "DOWN", "ACTIVE"]
    with pytest.raises(Conflict):
        cloud.vm_up("h1-vm1")
    heal = cloud.start_action("h", "heal", "h1-vm1")
    advance(cloud, clock, 1.0)
    assert heal.state == "succeeded"
    assert cloud.vms["h1-vm1"]["host"] in ("h2", "h3") and state(cloud, "h1-vm1") == "ACTIVE"
    cloud.host_up("h1")
    assert state(cloud, "h1-vm2") == "DOWN"  # until healed


def test_maintenance_keeps_vms_running_until_live_migrated_off() -> None:
    cloud, clock = make(hosts=3, vms=4)
    cloud.host_maintenance("h1")
    on_h1 = [n for n, v in cloud.vms.items() if v["host"] == "h1"]
    assert {state(cloud, n) for n in on_h1} == {"ACTIVE"}
    ops = [cloud.start_action(f"lm-{n}", "live_migrate", n) for n in on_h1]
    advance(cloud, clock, 1.0)
    assert {op.state for op in ops} == {"succeeded"}
    assert [n for n, v in cloud.vms.items() if v["host"] == "h1"] == []
    assert {state(cloud, n) for n in on_h1} == {"ACTIVE"}
    # to the least loaded hosts: 8 VMs over h2 and h3, 4 each
    hosts = [v["host"] for v in cloud.vms.values()]
    assert (hosts.count("h2"), hosts.count("h3")) == (6, 6)


def test_a_flap_returns_the_vm_active_after_down_for() -> None:
    cloud, clock = make()
    cloud.flap("h1-vm1", down_for=2.0)
    assert state(cloud, "h1-vm1") == "DOWN"
    advance(cloud, clock, 1.99)
    assert state(cloud, "h1-vm1") == "DOWN"
    advance(cloud, clock, 0.01)
    assert state(cloud, "h1-vm1") == "ACTIVE"
    cloud.flap("h1-vm2", down_for=1.0)  # a host outage outlasts a flap: stays DOWN
    cloud.host_down("h1")
    advance(cloud, clock, 2.0)
    assert state(cloud, "h1-vm2") == "DOWN"


def test_utilisation_of_a_vm_or_a_group() -> None:
    cloud, _ = make(groups=(WEB,))
    cloud.set_utilisation(vm="h1-vm1", cpu=0.7)
    cloud.set_utilisation(group="web", ram=0.9)
    assert (cloud.vms["h1-vm1"]["cpu"], cloud.vms["h1-vm1"]["ram"]) == (0.7, 0.4)
    assert {v["ram"] for v in web(cloud)} == {0.9}
    with pytest.raises(Invalid):
        cloud.set_utilisation(vm="h1-vm1", cpu=1.5)
    with pytest.raises(NotFound):
        cloud.set_utilisation(group="db", cpu=0.5)


def test_api_faults_end_after_their_duration_or_when_cleared() -> None:
    cloud, clock = make()
    cloud.api_fault(delay=0.5, fail_rate=1.0, duration=5)
    cloud.stream_cut(3)
    assert cloud.api_fault_check() == (0.5, True)
    assert cloud.stream_cut_active()
    advance(cloud, clock, 3.0)
    assert not cloud.stream_cut_active()
    advance(cloud, clock, 2.0)
    assert cloud.api_fault_check() == (0.0, False)
    cloud.api_fault(fail_rate=1.0)
    advance(cloud, clock, 1e6)
    assert cloud.api_fault_check()[1]  # no duration: until cleared
    cloud.clear_faults()
    assert cloud.api_fault_check() == (0.0, False)


def test_finished_operations_are_kept_within_a_bound() -> None:
    cloud, clock = make(ops_size=2)
    for i in range(3):
        cloud.start_action(f"o{i}", "stop", "h1-vm1")
        advance(cloud, clock, 1.0)
    assert cloud.operation("o0") is None
    assert isinstance(cloud.operation("o2"), Operation)


# --- HTTP

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def serve(cloud: Cloud, scenario: Scenario, token: str = "") -> None:
    """Runs ``scenario`` against the app over ``cloud``, its lifespan entered."""
    app = create_app(cloud, token)

    async def go() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await scenario(client)

    asyncio.run(go())


def test_http_state_is_the_snapshot() -> None:
    cloud, _ = make(groups=(WEB,))

    async def scenario(c: httpx.AsyncClient) -> None:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        r = await c.get("/v1/state")
        assert r.status_code == 200
        assert r.json() == cloud.snapshot()

    serve(cloud, scenario)


def test_http_watch_answers_at_once_when_changes_exist_else_at_its_timeout() -> None:
    cloud, _ = make()
    rv = cloud.resource_version

    async def scenario(c: httpx.AsyncClient) -> None:
        r = await c.post("/v1/faults", json={"kind": "vm_down", "vm": "h1-vm1"})
        assert r.json() == {"applied": "vm_down", "resource_version": rv + 1}
        body = (await c.get("/v1/watch", params={"since": rv, "timeout": 60})).json()
        assert body["resource_version"] == rv + 1
        [change] = body["changes"]
        assert (change["kind"], change["type"], change["object"]["state"]) == (
            "vm",
            "upsert",
            "DOWN",
        )
        empty = await c.get("/v1/watch", params={"since": rv + 1, "timeout": 0.2})
        assert empty.json() == {
            "incarnation": cloud.incarnation,
            "resource_version": rv + 1,
            "changes": [],
        }

    serve(cloud, scenario)


def test_each_cloud_is_its_own_incarnation_in_the_list_and_the_stream() -> None:
    """A restarted simcloud starts its versions again: its incarnation tells it apart."""
    first, second = make()[0], make()[0]
    assert first.snapshot()["resource_version"] == second.snapshot()["resource_version"]
    assert first.incarnation != second.incarnation
    assert first.snapshot()["incarnation"] == first.incarnation


def test_http_watch_pages_5000_changes_at_a_time() -> None:
    cloud, _ = make(hosts=1, vms=6000)

    async def scenario(c: httpx.AsyncClient) -> None:
        first = (await c.get("/v1/watch", params={"since": 0})).json()
        assert len(first["changes"]) == 5000
        assert first["resource_version"] == first["changes"][-1]["version"] == 5000
        rest = (await c.get("/v1/watch", params={"since": 5000})).json()
        assert len(rest["changes"]) == 1001 and rest["resource_version"] == 6001

    serve(cloud, scenario)


def test_http_watch_is_woken_by_a_change_and_by_an_operation_coming_due() -> None:
    cloud, clock = make()
    rv = cloud.resource_version

    async def scenario(c: httpx.AsyncClient) -> None:
        watch = asyncio.create_task(c.get("/v1/watch", params={"since": rv, "timeout": 60}))
        await asyncio.sleep(0)  # let the watch start waiting
        r = await c.post("/v1/faults", json={"kind": "host_down", "host": "h2"})
        assert r.status_code == 200
        body = (await watch).json()
        assert body["resource_version"] == rv + 3  # the host and its two VMs
        assert body["changes"][0]["object"]["state"] == "DOWN"

        body = {"id": "s", "action": "stop", "params": {"duration": 5}}
        assert (await c.post("/v1/vms/h1-vm1/actions", json=body)).status_code == 202
        since = cloud.resource_version
        watch = asyncio.create_task(c.get("/v1/watch", params={"since": since, "timeout": 60}))
        await asyncio.sleep(0)
        clock.now += 5  # the ticker finds the stop due and wakes the watch
        [change] = (await watch).json()["changes"]
        assert change["object"]["state"] == "STOPPED"

    serve(cloud, scenario)


def test_http_watch_410_when_compacted_and_503_during_a_stream_cut() -> None:
    cloud, clock = make(log_size=5)
    rv = cloud.resource_version

    async def scenario(c: httpx.AsyncClient) -> None:
        r = await c.get("/v1/watch", params={"since": 0, "timeout": 0.2})
        assert r.status_code == 410 and "relist" in r.json()["detail"]
        cut = await c.post("/v1/faults", json={"kind": "stream_cut", "seconds": 30})
        assert cut.json() == {"applied": "stream_cut", "resource_version": rv}
        r = await c.get("/v1/watch", params={"since": rv, "timeout": 0.2})
        assert r.status_code == 503
        await c.post("/v1/faults", json={"kind": "vm_down", "vm": "h1-vm1"})
        assert (await c.get("/v1/state")).json()["resource_version"] == rv + 1  # the rest works
        clock.now += 30
        r = await c.get("/v1/watch", params={"since": rv})
        assert len(r.json()["changes"]) == 1

    serve(cloud, scenario)


def test_http_actions_and_operations() -> None:
    cloud, clock = make(groups=(WEB,))
    body = {"id": "ev-1", "action": "resize", "token": 2, "params": {"flavor": "m1.large"}}

    async def scenario(c: httpx.AsyncClient) -> None:
        r = await c.post("/v1/vms/h1-vm1/actions", json=body)
        assert r.status_code == 202 and r.json()["state"] == "running"
        assert (await c.post("/v1/vms/h1-vm1/actions", json=body)).json()["id"] == "ev-1"
        stale = await c.post("/v1/vms/h1-vm1/actions", json=body | {"token": 1})
        assert stale.status_code == 409
        clock.now += 1.0
        op = (await c.get("/v1/operations/ev-1")).json()
        assert (op["state"], op["error"], op["token"]) == ("succeeded", None, 2)
        vms = (await c.get("/v1/state")).json()["vms"]
        vm = next(v for v in vms if v["name"] == "h1-vm1")
        assert (vm["flavor"], vm["state"]) == ("m1.large", "ACTIVE")
        scale = await c.post("/v1/groups/web/actions", json={"id": "ev-2", "action": "scale_out"})
        assert scale.status_code == 202
        assert (await c.get("/v1/operations/nope")).status_code == 404
        r = await c.post("/v1/vms/nope/actions", json=body | {"id": "x"})
        assert r.status_code == 404
        r = await c.post("/v1/groups/db/actions", json={"id": "y", "action": "scale_in"})
        assert r.status_code == 404
        r = await c.post("/v1/vms/h1-vm1/actions", json={"id": "a", "action": "scale_out"})
        assert r.status_code == 422 and "group" in r.json()["detail"]
        r = await c.post("/v1/groups/web/actions", json={"id": "b", "action": "heal"})
        assert r.status_code == 422

    serve(cloud, scenario)


def test_http_operations_lists_every_operation_kept_in_the_order_they_started() -> None:
    cloud, clock = make(ops_size=1)

    async def scenario(c: httpx.AsyncClient) -> None:
        assert (await c.get("/v1/operations")).json() == {"operations": []}
        for i, vm in enumerate(["h1-vm1", "h2-vm1", "h3-vm1"]):
            params = {"duration": 1.0 + i, "label": f"l{i}"}
            body = {"id": f"op-{i}", "action": "upgrade", "params": params}
            assert (await c.post(f"/v1/vms/{vm}/actions", json=body)).status_code == 202
        clock.now += 2.5
        ops = (await c.get("/v1/operations")).json()["operations"]
        # op-0 and op-1 finished, and the bound keeps one finished operation; op-2 runs
        assert [(o["id"], o["target"], o["state"]) for o in ops] == [
            ("op-1", "h2-vm1", "succeeded"),
            ("op-2", "h3-vm1", "running"),
        ]
        assert (ops[0]["started_at"], ops[0]["done_at"]) == (1000.0, 1002.5)
        assert ops[0]["params"] == {"duration": 2.0, "label": "l1"}
        assert ops[1]["done_at"] is None

    serve(cloud, scenario)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/vms/h1-vm1/actions", {"id": "a", "action": "heal", "colour": 1}, "colour"),
        ("/v1/vms/h1-vm1/actions", {"id": "a", "action": "reboot"}, "action"),
        ("/v1/vms/h1-vm1/actions", {"action": "heal"}, "id"),
        ("/v1/vms/h1-vm1/actions", {"id": "a", "action": "heal", "token": -1}, "token"),
        ("/v1/vms/h1-vm1/actions", {"id": "a", "action": "stop", "params": []}, "params"),
        ("/v1/faults", {"kind": "utilisation", "vm": "h1-vm1", "cpu": 1.5}, "cpu"),
        ("/v1/faults", {"kind": "utilisation", "vm": "h1-vm1", "group": "web"}, "group"),
        ("/v1/faults", {"kind": "meteor", "vm": "h1-vm1"}, "kind"),
        ("/v1/faults", {"kind": "flap", "vm": "h1-vm1"}, "down_for"),
        ("/v1/faults", {"kind": "api", "fail_rate": 2}, "fail_rate"),
        ("/v1/vms", {"name": "bad name", "host": "h1"}, "name"),
    ],
)
def test_http_bad_bodies_are_422_naming_the_field(
    path: str, body: dict[str, Any], field: str
) -> None:
    cloud, _ = make()

    async def scenario(c: httpx.AsyncClient) -> None:
        r = await c.post(path, json=body)
        assert r.status_code == 422, r.text
        assert field in str(r.json()["detail"])

    serve(cloud, scenario)


def test_http_faults_on_unknown_objects_are_404() -> None:
    cloud, _ = make()

    async def scenario(c: httpx.AsyncClient) -> None:
        for fault in (
            {"kind": "vm_down", "vm": "zz"},
            {"kind": "host_up", "host": "zz"},
            {"kind": "utilisation", "group": "zz", "cpu": 0.1},
            {"kind": "flap", "vm": "zz", "down_for": 1},
        ):
            assert (await c.post("/v1/faults", json=fault)).status_code == 404

    serve(cloud, scenario)


def test_http_vms_added_and_deleted() -> None:
    cloud, _ = make(groups=(WEB,))

    async def scenario(c: httpx.AsyncClient) -> None:
        r = await c.post("/v1/vms", json={"name": "web-9", "host": "h2", "group": "web"})
        assert r.status_code == 201 and r.json()["state"] == "ACTIVE"
        assert "web-9" in cloud.replicas("web")
        assert (await c.post("/v1/vms", json={"name": "web-9", "host": "h2"})).status_code == 409
        assert (await c.post("/v1/vms", json={"name": "v", "host": "h9"})).status_code == 404
        assert (await c.delete("/v1/vms/web-9")).status_code == 204
        assert (await c.delete("/v1/vms/web-9")).status_code == 404
        assert cloud.vm("web-9") is None

    serve(cloud, scenario)


def test_http_a_token_guards_every_route_but_healthz() -> None:
    cloud, _ = make()
    right = {"authorization": "Bearer s3cret"}

    async def scenario(c: httpx.AsyncClient) -> None:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/v1/state")).status_code == 401
        assert (await c.get("/compute/")).status_code == 401
        vm_down = {"kind": "vm_down", "vm": "h1-vm1"}
        assert (await c.post("/v1/faults", json=vm_down)).status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert (await c.get("/v1/state", headers=wrong)).status_code == 401
        assert (await c.get("/v1/state", headers={"x-auth-token": "s3cret"})).status_code == 401
        assert (await c.get("/v1/state", headers=right)).status_code == 200
        assert (await c.get("/compute/", headers=right)).status_code == 200
        # OpenStack clients send the token as X-Auth-Token
        assert (await c.get("/compute/", headers={"x-auth-token": "s3cret"})).status_code == 200

    serve(cloud, scenario, token="s3cret")
    assert cloud.vms["h1-vm1"]["state"] == "ACTIVE"


def test_http_an_api_fault_fails_every_call_but_faults_and_healthz() -> None:
    cloud, clock = make()

    async def scenario(c: httpx.AsyncClient) -> None:
        fault = {"kind": "api", "fail_rate": 1, "duration": 10}
        assert (await c.post("/v1/faults", json=fault)).status_code == 200
        assert (await c.get("/v1/state")).status_code == 503
        assert (await c.get("/v1/watch", params={"since": 0})).status_code == 503
        assert (await c.get("/compute/")).status_code == 503
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/v1/faults")).json()["api"]["fail_rate"] == 1
        clock.now += 10  # over
        assert (await c.get("/v1/state")).status_code == 200
        await c.post("/v1/faults", json={"kind": "api", "fail_rate": 1})
        assert (await c.get("/v1/state")).status_code == 503
        assert (await c.delete("/v1/faults")).status_code == 200
        assert (await c.get("/v1/state")).status_code == 200

    serve(cloud, scenario)


def test_the_command_line_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMCLOUD_PORT", "9999")
    monkeypatch.setenv("SIMCLOUD_GROUPS", "web:3:1:5,db:2:2:4")
    monkeypatch.setenv("SIMCLOUD_ACTION_SECONDS", "0.3")
    args = parser().parse_args(["--hosts", "7"])
    assert (args.port, args.hosts, args.action_seconds) == (9999, 7, 0.3)
    assert args.groups is None and args.env_groups == ["web:3:1:5", "db:2:2:4"]
    args = parser().parse_args(["--group", "api:1:0:2"])
    assert args.groups == [GroupSpec("api", 1, 0, 2)]


@pytest.mark.parametrize(
    ("host", "token", "refused"),
    [
        ("127.0.0.1", "", False),
        ("127.0.0.2", "", False),
        ("localhost", "", False),
        ("::1", "", False),
        ("[::1]", "", False),
        ("0.0.0.0", "", True),
        ("::", "", True),
        ("", "", True),
        ("10.1.2.3", "", True),
        ("simcloud.example", "", True),  # a name may resolve to any interface
        ("0.0.0.0", "s3cret", False),
        ("10.1.2.3", "s3cret", False),
    ],
)
def test_without_a_token_only_a_loopback_address_is_served(
    host: str, token: str, refused: bool
) -> None:
    assert (open_door(host, token) is not None) == refused


def test_listening_beyond_loopback_without_a_token_is_refused_in_one_line() -> None:
    """Before seeding or binding anything: the exit code 2 and one line saying what to set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMCLOUD_")}
    env["SIMCLOUD_HOST"] = "0.0.0.0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simcloud", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2
    assert out == "" and len(err.splitlines()) == 1, err
    assert "refusing to listen on 0.0.0.0 without a token: set SIMCLOUD_TOKEN" in err
