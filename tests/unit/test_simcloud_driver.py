"""The simcloud driver against a real simcloud over HTTP: an action becomes an operation
named by the event id and the driver waits for its outcome; a repeat is harmless, a
stale fencing token is refused, a refused or failed operation fails the event with the
cloud's reason, and a cloud briefly failing is waited out."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.worker.errors import ActionFailed
from scheduler.worker.hold import Hold
from scheduler.worker.simcloud_driver import SimcloudDriver
from shared.models import Action, VmEventMessage
from simcloud.model import Cloud, GroupSpec
from tests.simcloud_server import Sim, serve

TOKEN = "t0ken"
_ids = itertools.count()


@pytest.fixture
def sim() -> Iterator[Sim]:
    cloud = Cloud(action_seconds=0.1, seed=3)
    cloud.seed_inventory(2, 2, [GroupSpec("web", replicas=2, min=1, max=3)])
    yield from serve(cloud, TOKEN)


@pytest.fixture
def driver(sim: Sim) -> Iterator[SimcloudDriver]:
    d = SimcloudDriver(sim.url, TOKEN, timeout=5, poll_interval=0.02, max_wait=10)
    yield d
    d.close()


def event(vm: str, action: Action, **payload: Any) -> VmEventMessage:
    return VmEventMessage(
        id=f"e{next(_ids)}",
        host="h1",
        vm=vm,
        policy="p",
        action=action,
        payload=payload,
        accepted_at=0.0,
    )


def test_a_heal_brings_a_down_vm_back_and_a_repeat_does_nothing_more(
    sim: Sim, driver: SimcloudDriver
) -> None:
    sim.fault(kind="vm_down", vm="h1-vm1")
    heal = event("h1-vm1", Action.HEAL)
    driver.execute(heal, Hold(1))
    assert sim.vm("h1-vm1")["state"] == "ACTIVE"
    version = sim.vm("h1-vm1")["version"]
    driver.execute(heal, Hold(1))  # the same operation: nothing runs again
    assert sim.vm("h1-vm1")["version"] == version


def test_scaling_acts_on_the_group_and_a_refusal_says_why(sim: Sim, driver: SimcloudDriver) -> None:
    driver.execute(event("web", Action.SCALE_OUT), Hold(1))
    assert len(sim.replicas("web")) == 3
    with pytest.raises(ActionFailed, match="max"):
        driver.execute(event("web", Action.SCALE_OUT), Hold(1))
    assert len(sim.replicas("web")) == 3


def test_a_stale_token_and_an_unknown_vm_are_refused(sim: Sim, driver: SimcloudDriver) -> None:
    pause = event("h2-vm1", Action.PAUSE)
    driver.execute(pause, Hold(5))
    with pytest.raises(ActionFailed, match="409"):
        driver.execute(pause, Hold(4))
    with pytest.raises(ActionFailed, match="404"):
        driver.execute(event("nope", Action.HEAL), Hold(1))


def test_a_cloud_failing_for_a_moment_is_waited_out(sim: Sim, driver: SimcloudDriver) -> None:
    sim.fault(kind="api", fail_rate=1.0, duration=1.0)
    driver.execute(event("h2-vm2", Action.STOP), Hold(1))
    assert sim.vm("h2-vm2")["state"] == "STOPPED"
