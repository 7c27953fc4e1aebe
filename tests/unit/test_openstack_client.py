"""The OpenStack client side -- the fetcher (producer.monitoring.openstack) and the driver
(scheduler.worker.openstack_driver) -- through the real openstacksdk, against simcloud's
Compute API subset (simcloud.compute) served over real HTTP by uvicorn in a thread.

Faults are injected and the cloud is read through simcloud's own HTTP API: the model
belongs to the server's event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack
import pytest

from harness.processes import free_port
from producer.monitoring.fetchers import SourceUnavailable
from producer.monitoring.model import HostState, Observation, VmState
from producer.monitoring.openstack import (
    OpenStackFetcher,
    build_observation,
    polled_openstack_fetcher,
    server_to_record,
    service_to_record,
    timestamp_version,
)
from producer.settings import ProducerSettings
from scheduler.worker.drivers import build_driver
from scheduler.worker.errors import ActionFailed, DriverMisconfigured, OutcomeUnknown
from scheduler.worker.hold import Hold
from scheduler.worker.openstack_driver import OpenStackConfig, OpenStackDriver, connect_endpoint
from scheduler.worker.settings import WorkerSettings
from shared.cloud import FENCING_HEADER, GROUP_KEY, OPERATION_HEADER, SCALE_IN_KEY
from shared.models import Action, VmEventMessage
from simcloud.model import Cloud, GroupSpec
from tests import simcloud_server

ACTION_SECONDS = 0.2
TOKEN = "s3cret"

#: openstacksdk 4.22 warns about itself on every connection and request (its InfluxDB
#: config check is always true; its proxy passes a parameter it deprecated): pending
#: deprecations, silent outside tests, errors under this project's pytest settings
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack.*")


@dataclass
class Sim(simcloud_server.Sim):
    """A running simcloud, with the OpenStack fetcher and driver pointed at it."""

    def fetcher(self) -> OpenStackFetcher:
        return OpenStackFetcher.from_endpoint(self.compute_url, self.token)

    def driver(self, **kwargs: Any) -> OpenStackDriver:
        return OpenStackDriver.from_endpoint(
            self.compute_url, self.token, 10.0, max_wait=15.0, poll_interval=0.05, **kwargs
        )


def serve(cloud: Cloud, token: str) -> Iterator[Sim]:
    for sim in simcloud_server.serve(cloud, token):
        yield Sim(sim.url, sim.compute_url, sim.http, sim.token)


def seeded_cloud() -> Cloud:
    cloud = Cloud(action_seconds=ACTION_SECONDS, seed=7)
    cloud.seed_inventory(3, 4, [GroupSpec("web", replicas=2, min=1, max=3)])
    return cloud


@pytest.fixture
def sim() -> Iterator[Sim]:
    yield from serve(seeded_cloud(), TOKEN)


@pytest.fixture
def slow_sim() -> Iterator[Sim]:
    """stop, resize and scale_in take 2 s: time to act while they run."""
    slow = {"stop": 2.0, "resize": 2.0, "scale_in": 2.0}
    cloud = Cloud(action_seconds=ACTION_SECONDS, per_action_seconds=slow)
    cloud.seed_inventory(3, 4, [GroupSpec("web", replicas=3, min=1, max=4)])
    yield from serve(cloud, "")


_ids = iter(range(1_000_000))


def event(
    action: Action, vm: str, host: str = "h1", event_id: str | None = None, **payload: Any
) -> VmEventMessage:
    return VmEventMessage(
        id=event_id or f"ev-{next(_ids)}",
        host=host,
        vm=vm,
        policy="test",
        action=action,
        payload=payload,
        accepted_at=time.time(),
    )


def observe(fetcher: OpenStackFetcher) -> Observation:
    """One list, then the fetcher closed."""

    async def go() -> Observation:
        try:
            return (await fetcher.list()).observation
        finally:
            await fetcher.close()

    return asyncio.run(go())


def listed(sim: Sim) -> Observation:
    return observe(sim.fetcher())


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- the fetcher ---------------------------------------------------------------------------


def test_fetcher_lists_hosts_vms_and_groups(sim: Sim) -> None:
    obs = listed(sim)
    assert obs.full and obs.bad == 0
    assert {h.host: h.state for h in obs.hosts} == {f"h{i}": HostState.UP for i in (1, 2, 3)}
    vms = {v.vm: v for v in obs.vms}
    truth = {v["name"]: v for v in sim.state()["vms"]}
    assert set(vms) == set(truth)
    assert len([v for v in vms.values() if v.group is None]) == 12  # 3 hosts x 4 VMs
    for name, record in vms.items():
        assert record.host == truth[name]["host"]
        assert record.state is VmState.ACTIVE
        assert record.group == truth[name]["group"]
        assert (record.cpu, record.ram) == (0.0, 0.0)  # Nova reports no utilisation
        assert record.version > 0
    assert vms["h2-vm3"].host == "h2"
    assert vms["web-1"].group == "web"
    assert [(g.group, g.min, g.max) for g in obs.groups] == [("web", 1, 3)]


def test_fetcher_sees_vm_and_host_faults(sim: Sim) -> None:
    before = {v.vm: v for v in listed(sim).vms}
    sim.fault(kind="vm_down", vm="h1-vm2")
    sim.fault(kind="host_maintenance", host="h2")
    sim.fault(kind="host_down", host="h3")
    obs = listed(sim)
    vms = {v.vm: v for v in obs.vms}
    assert vms["h1-vm2"].state is VmState.DOWN
    assert vms["h1-vm2"].version > before["h1-vm2"].version
    assert vms["h1-vm1"].state is VmState.ACTIVE
    assert vms["h1-vm1"].version == before["h1-vm1"].version  # unchanged: same version
    assert all(v.state is VmState.DOWN for v in obs.vms if v.host == "h3")
    hosts = {h.host: h.state for h in obs.hosts}
    assert hosts == {"h1": HostState.UP, "h2": HostState.MAINTENANCE, "h3": HostState.DOWN}


def test_fetcher_refused_without_the_token(sim: Sim) -> None:
    with pytest.raises(SourceUnavailable):
        observe(OpenStackFetcher.from_endpoint(sim.compute_url, "wrong"))


def test_built_from_clouds_yaml(sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard way: a clouds.yaml entry (here a Keystone-less one)."""
    clouds = tmp_path / "clouds.yaml"
    entry = {
        "auth_type": "admin_token",
        "auth": {"endpoint": sim.compute_url, "token": sim.token},
        "compute_endpoint_override": sim.compute_url,
    }
    clouds.write_text(json.dumps({"clouds": {"sim": entry}}))  # JSON is YAML
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    settings = ProducerSettings(monitor_source="openstack", openstack_cloud="sim")
    assert len(observe(polled_openstack_fetcher(settings)).vms) == 14
    config = OpenStackConfig(openstack_cloud="sim", action_poll_interval=0.05)
    driver = build_driver(WorkerSettings(driver="openstack"), config)
    assert isinstance(driver, OpenStackDriver)
    driver.execute(event(Action.STOP, "h1-vm1"), Hold(1))
    assert sim.vm("h1-vm1")["state"] == "STOPPED"
    with pytest.raises(DriverMisconfigured, match="nowhere"):
        OpenStackDriver.from_cloud("nowhere")


def test_built_from_settings_without_keystone(sim: Sim) -> None:
    settings = ProducerSettings(
        monitor_source="openstack",
        openstack_compute_url=sim.compute_url,
        openstack_token=sim.token,
    )
    fetcher = polled_openstack_fetcher(settings)
    assert fetcher.streams is False
    assert len(observe(fetcher).vms) == 14
    config = OpenStackConfig(
        openstack_compute_url=sim.compute_url,
        openstack_token=sim.token,
        action_poll_interval=0.05,
    )
    build_driver(WorkerSettings(driver="openstack"), config).execute(
        event(Action.PAUSE, "h1-vm1"), Hold(1)
    )
    assert sim.vm("h1-vm1")["state"] == "PAUSED"
    with pytest.raises(DriverMisconfigured):
        build_driver(WorkerSettings(driver="openstack"), OpenStackConfig())


def test_sdk_pages_through_the_servers(sim: Sim) -> None:
    conn = connect_endpoint(sim.compute_url, sim.token)
    names = [s.name for s in conn.compute.servers(details=True, all_projects=True, limit=5)]
    assert sorted(names) == sorted(v["name"] for v in sim.state()["vms"])
    assert len(names) == len(set(names)) == 14
    assert conn.compute.get_server("h1-vm1").compute_host == "h1"
    conn.close()


def test_a_bad_record_is_skipped_and_counted() -> None:
    good = {
        "id": "vm-a",
        "name": "vm-a",
        "status": "SHUTOFF",
        "OS-EXT-SRV-ATTR:host": "h1",
        "metadata": {GROUP_KEY: "web"},
        "updated": "2024-05-01T10:00:00Z",
    }
    bad = [
        {"id": "vm-b", "OS-EXT-SRV-ATTR:host": "h1", "updated": "2024-05-01T10:00:00Z"},
        {**good, "id": "vm-c", "updated": "yesterday"},
        {**good, "id": "vm-d", "metadata": {GROUP_KEY: "no/slash"}},
        {**good, "id": "vm-e", "status": "ACTIVE", "OS-EXT-SRV-ATTR:host": None},
        "not an object",
    ]
    building = {**good, "id": "vm-f", "status": "BUILD", "OS-EXT-SRV-ATTR:host": None}
    services = [
        {"host": "h1", "state": "up", "status": "disabled", "updated_at": "2024-05-01T10:00:00"},
        {"host": "h2", "state": "sideways", "status": "enabled"},
    ]
    obs = build_observation([good, *bad, building], services)  # type: ignore[list-item]
    assert [v.vm for v in obs.vms] == ["vm-a"]
    assert obs.vms[0].state is VmState.STOPPED
    assert obs.vms[0].group == "web"
    assert obs.vms[0].version == timestamp_version("2024-05-01T10:00:00+00:00")
    assert obs.bad == len(bad) + 1  # and the bad service
    assert {h.host: h.state for h in obs.hosts} == {"h1": HostState.MAINTENANCE}
    assert server_to_record(building) is None  # not placed yet: skipped, not bad


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("ACTIVE", VmState.ACTIVE),
        ("ERROR", VmState.DOWN),
        ("PAUSED", VmState.PAUSED),
        ("SHUTOFF", VmState.STOPPED),
        ("MIGRATING", VmState.MIGRATING),
        ("RESIZE", VmState.RESIZING),
        ("VERIFY_RESIZE", VmState.RESIZING),
        ("REBUILD", VmState.UPDATING),
        ("HARD_REBOOT", VmState.UNKNOWN),
    ],
)
def test_server_status_mapping(status: str, state: VmState) -> None:
    raw = {
        "id": "x",
        "status": status,
        "OS-EXT-SRV-ATTR:host": "h",
        "updated": "2024-01-01T00:00:00",
    }
    record = server_to_record(raw)
    assert record is not None and record.state is state


def test_service_mapping() -> None:
    assert service_to_record({"host": "h", "state": "down", "status": "disabled"}).state is (
        HostState.DOWN
    )
    assert service_to_record({"host": "h", "state": "up", "status": "enabled"}).state is (
        HostState.UP
    )


# -- the driver ----------------------------------------------------------------------------


def test_driver_heals_a_down_vm(sim: Sim) -> None:
    sim.fault(kind="vm_down", vm="h1-vm1")
    sim.driver().execute(event(Action.HEAL, "h1-vm1"), Hold(1))
    assert sim.vm("h1-vm1")["state"] == "ACTIVE"


def test_driver_heals_a_vm_of_a_down_host_by_evacuating_it(sim: Sim) -> None:
    sim.fault(kind="host_down", host="h2")
    conn = connect_endpoint(sim.compute_url, sim.token)
    assert conn.compute.get_server("h2-vm1").host_status == "DOWN"
    conn.close()
    sim.driver().execute(event(Action.HEAL, "h2-vm1", host="h2"), Hold(1))
    vm = sim.vm("h2-vm1")
    assert vm["host"] != "h2" and vm["state"] == "ACTIVE"


def test_driver_heals_a_stopped_vm_by_starting_it(sim: Sim) -> None:
    driver = sim.driver()
    driver.execute(event(Action.STOP, "h1-vm2"), Hold(1))
    assert sim.vm("h1-vm2")["state"] == "STOPPED"
    driver.execute(event(Action.HEAL, "h1-vm2"), Hold(1))
    assert sim.vm("h1-vm2")["state"] == "ACTIVE"


def test_driver_live_migrates_off_a_host_in_maintenance(sim: Sim) -> None:
    sim.fault(kind="host_maintenance", host="h1")
    sim.driver().execute(event(Action.LIVE_MIGRATE, "h1-vm3", host="h1"), Hold(1))
    vm = sim.vm("h1-vm3")
    assert vm["host"] in ("h2", "h3") and vm["state"] == "ACTIVE"
    hosts = {h.host: h.state for h in listed(sim).hosts}
    assert hosts["h1"] is HostState.MAINTENANCE


def test_driver_live_migrates_to_a_given_host(sim: Sim) -> None:
    target = event(Action.LIVE_MIGRATE, "h2-vm1", host="h2", params={"host": "h3"})
    sim.driver().execute(target, Hold(1))
    assert sim.vm("h2-vm1")["host"] == "h3"


def test_driver_live_migrates_at_microversion_2_1(sim: Sim) -> None:
    """An old cloud: no block_migration "auto", a target host implies force."""

    def old() -> openstack.connection.Connection:
        return openstack.connect(
            load_yaml_config=False,
            load_envvars=False,
            auth_type="admin_token",
            auth={"endpoint": sim.compute_url, "token": sim.token},
            compute_endpoint_override=sim.compute_url,
            compute_api_version="2.1",
        )

    driver = OpenStackDriver(old, max_wait=15.0, poll_interval=0.05)
    driver.execute(event(Action.LIVE_MIGRATE, "h1-vm4"), Hold(1))
    assert sim.vm("h1-vm4")["host"] != "h1"
    driver.execute(event(Action.LIVE_MIGRATE, "h2-vm2", host="h2", params={"host": "h1"}), Hold(1))
    assert sim.vm("h2-vm2")["host"] == "h1"
    with pytest.raises(ActionFailed, match=r"2\.56"):  # migrate to a host needs 2.56
        driver.execute(event(Action.MIGRATE, "h2-vm3", host="h2", params={"host": "h1"}), Hold(1))


def test_driver_migrates_and_confirms(sim: Sim) -> None:
    sim.driver().execute(event(Action.MIGRATE, "h2-vm4", host="h2"), Hold(1))
    assert sim.vm("h2-vm4")["host"] != "h2"
    conn = connect_endpoint(sim.compute_url, sim.token)
    assert conn.compute.get_server("h2-vm4").status == "ACTIVE"  # confirmed
    conn.close()


def test_driver_stops_and_pauses(sim: Sim) -> None:
    driver = sim.driver()
    driver.execute(event(Action.STOP, "h3-vm1", host="h3"), Hold(1))
    driver.execute(event(Action.PAUSE, "h3-vm2", host="h3"), Hold(1))
    assert sim.vm("h3-vm1")["state"] == "STOPPED"
    assert sim.vm("h3-vm2")["state"] == "PAUSED"
    states = {v.vm: v.state for v in listed(sim).vms}
    assert states["h3-vm1"] is VmState.STOPPED
    assert states["h3-vm2"] is VmState.PAUSED


def test_driver_resizes_and_confirms(sim: Sim) -> None:
    sim.driver().execute(event(Action.RESIZE, "h3-vm3", host="h3", flavor="m1.large"), Hold(1))
    assert sim.vm("h3-vm3")["flavor"] == "m1.large"
    conn = connect_endpoint(sim.compute_url, sim.token)
    assert conn.compute.get_server("h3-vm3").status == "ACTIVE"
    conn.close()


def test_driver_resize_to_an_unknown_flavor_fails(sim: Sim) -> None:
    with pytest.raises(ActionFailed, match="unknown flavor"):
        sim.driver().execute(event(Action.RESIZE, "h3-vm3", host="h3", flavor="m9.huge"), Hold(1))


def test_driver_rebuilds_for_an_update(sim: Sim) -> None:
    sim.driver().execute(event(Action.UPDATE, "h3-vm4", host="h3", image="v7"), Hold(1))
    vm = sim.vm("h3-vm4")
    assert (vm["image"], vm["state"]) == ("v7", "ACTIVE")


def test_driver_scales_out_and_in_within_bounds(sim: Sim) -> None:
    driver = sim.driver()
    assert sim.replicas("web") == ["web-1", "web-2"]
    driver.execute(event(Action.SCALE_OUT, "web"), Hold(1))
    assert sim.replicas("web") == ["web-1", "web-2", "web-3"]
    new = sim.vm("web-3")
    assert (new["state"], new["group"]) == ("ACTIVE", "web")
    with pytest.raises(ActionFailed, match="max"):  # max 3
        driver.execute(event(Action.SCALE_OUT, "web"), Hold(1))
    driver.execute(event(Action.SCALE_IN, "web"), Hold(1))
    assert sim.replicas("web") == ["web-1", "web-2"]  # the newest one went
    driver.execute(event(Action.SCALE_IN, "web"), Hold(1))
    assert sim.replicas("web") == ["web-1"]
    with pytest.raises(ActionFailed, match="min"):  # min 1
        driver.execute(event(Action.SCALE_IN, "web"), Hold(1))
    assert sim.replicas("web") == ["web-1"]


def test_a_stale_fencing_token_is_refused(sim: Sim) -> None:
    driver = sim.driver()
    sim.fault(kind="vm_down", vm="h1-vm1")
    driver.execute(event(Action.HEAL, "h1-vm1", event_id="heal-1"), Hold(5))
    with pytest.raises(ActionFailed, match="stale fencing token"):
        driver.execute(event(Action.HEAL, "h1-vm1", event_id="heal-1"), Hold(3))
    driver.execute(event(Action.HEAL, "h1-vm1", event_id="heal-1"), Hold(6))  # a newer claim


def test_an_event_repeated_runs_its_action_once(sim: Sim) -> None:
    driver = sim.driver()
    out = event(Action.SCALE_OUT, "web", event_id="out-1")
    driver.execute(out, Hold(1))
    driver.execute(out, Hold(2))  # a retry (a new claim) of the same event
    assert sim.replicas("web") == ["web-1", "web-2", "web-3"]
    op = sim.http.get("/v1/operations/out-1").json()
    assert (op["action"], op["state"]) == ("scale_out", "succeeded")

    scale_in = event(Action.SCALE_IN, "web", event_id="in-1")
    driver.execute(scale_in, Hold(1))
    driver.execute(scale_in, Hold(2))
    assert sim.replicas("web") == ["web-1", "web-2"]

    move = event(Action.MIGRATE, "h1-vm1", event_id="move-1")
    driver.execute(move, Hold(1))
    host = sim.vm("h1-vm1")["host"]
    driver.execute(move, Hold(2))
    assert sim.vm("h1-vm1")["host"] == host  # not moved a second time


def test_a_retry_joins_the_action_under_way(slow_sim: Sim) -> None:
    """A worker that died mid-action: the next claim waits for the same operation."""
    sim = slow_sim
    conn = connect_endpoint(sim.compute_url, None)
    conn.compute.additional_headers.update({OPERATION_HEADER: "stop-1", FENCING_HEADER: "1"})
    conn.compute.stop_server("h2-vm1")  # the first claim's call; then it "died"
    conn.close()
    sim.driver().execute(event(Action.STOP, "h2-vm1", host="h2", event_id="stop-1"), Hold(2))
    assert sim.vm("h2-vm1")["state"] == "STOPPED"
    op = sim.http.get("/v1/operations/stop-1").json()
    assert op["token"] == 2


def test_a_retry_finds_the_replica_its_scale_in_is_deleting(slow_sim: Sim) -> None:
    sim = slow_sim
    conn = connect_endpoint(sim.compute_url, None)
    conn.compute.set_server_metadata("web-3", **{SCALE_IN_KEY: "in-9"})
    conn.compute.additional_headers.update({OPERATION_HEADER: "in-9", FENCING_HEADER: "1"})
    conn.compute.delete_server("web-3")  # the first claim's calls; then it "died"
    conn.close()
    sim.driver().execute(event(Action.SCALE_IN, "web", event_id="in-9"), Hold(2))
    assert sim.replicas("web") == ["web-1", "web-2"]


def test_an_action_the_cloud_refuses_fails(sim: Sim) -> None:
    driver = sim.driver()
    driver.execute(event(Action.STOP, "h1-vm1"), Hold(1))
    with pytest.raises(ActionFailed, match="cannot pause"):
        driver.execute(event(Action.PAUSE, "h1-vm1"), Hold(1))


def test_a_missing_server_fails(sim: Sim) -> None:
    with pytest.raises(ActionFailed, match="no server"):
        sim.driver().execute(event(Action.HEAL, "nope"), Hold(1))


def test_an_unreachable_cloud_fails() -> None:
    driver = OpenStackDriver.from_endpoint(
        f"http://127.0.0.1:{free_port()}/compute", None, 2.0, max_wait=2.0, poll_interval=0.05
    )
    with pytest.raises(ActionFailed, match="unreachable"):
        driver.execute(event(Action.HEAL, "h1-vm1"), Hold(1))


def test_a_failure_during_the_wait_is_reported(slow_sim: Sim) -> None:
    """The VM goes down while it is being resized: the operation fails, and says why."""
    sim = slow_sim
    driver = sim.driver()
    done: list[BaseException | None] = []

    def run() -> None:
        try:
            driver.execute(event(Action.RESIZE, "h1-vm2", flavor="m1.medium"), Hold(1))
            done.append(None)
        except BaseException as exc:  # reported below
            done.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: sim.vm("h1-vm2")["state"] == "RESIZING", "the resize to start")
    sim.fault(kind="vm_down", vm="h1-vm2")
    thread.join(15)
    assert done and isinstance(done[0], ActionFailed)
    assert not isinstance(done[0], OutcomeUnknown)  # the cloud says how it ended
    assert "became DOWN while resize ran" in str(done[0])


def operation_runs(sim: Sim, op_id: str) -> bool:
    answer = sim.http.get(f"/v1/operations/{op_id}")
    return answer.status_code == 200 and answer.json()["state"] == "running"


class Background:
    """``driver.execute(ev)`` in a thread."""

    def __init__(self, driver: OpenStackDriver, ev: VmEventMessage) -> None:
        self.result: list[str | None] = []
        self.error: list[BaseException] = []

        def run() -> None:
            try:
                self.result.append(driver.execute(ev, Hold(1)))
            except BaseException as exc:  # reported by outcome()
                self.error.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def outcome(self, timeout: float = 20.0) -> str | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the driver is still waiting"
        if self.error:
            raise self.error[0]
        return self.result[0]


def test_a_cloud_that_cannot_be_asked_while_the_server_is_busy_is_asked_until_it_answers(
    slow_sim: Sim,
) -> None:
    """Every read of the server fails for longer than the stop takes (far more reads
    than the ten errors the driver used to give up after): the driver waits for Nova's
    record of the server to answer, and the success is recorded as learnt late."""
    sim = slow_sim
    running = Background(sim.driver(), event(Action.STOP, "h2-vm1", "h2", "stop-late"))
    wait_for(lambda: operation_runs(sim, "stop-late"), "the stop to start")
    sim.fault(kind="api", fail_rate=1.0, duration=3.0)
    note = running.outcome()
    assert note is not None and note.startswith("outcome learnt late"), note
    assert sim.vm("h2-vm1")["state"] == "STOPPED"


def test_an_outcome_not_learnt_within_the_wait_is_unknown(slow_sim: Sim) -> None:
    sim = slow_sim
    driver = OpenStackDriver.from_endpoint(
        sim.compute_url, None, 2.0, max_wait=1.0, poll_interval=0.05
    )
    try:
        running = Background(driver, event(Action.STOP, "h2-vm1", "h2", "stop-lost"))
        wait_for(lambda: operation_runs(sim, "stop-lost"), "the stop to start")
        sim.fault(kind="api", fail_rate=1.0)
        with pytest.raises(OutcomeUnknown, match="outcome unknown: the cloud could not be asked"):
            running.outcome()
    finally:
        sim.http.delete("/v1/faults").raise_for_status()
    still = OpenStackDriver.from_endpoint(sim.compute_url, None, 2.0, max_wait=0.3)
    with pytest.raises(OutcomeUnknown, match="outcome unknown: still RESIZE"):
        still.execute(event(Action.RESIZE, "h1-vm2", flavor="m1.medium"), Hold(1))
