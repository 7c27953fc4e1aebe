"""The simcloud driver against a real simcloud over HTTP: an action becomes an operation
named by the event id and the driver waits for its outcome; a repeat is harmless, a
stale fencing token is refused, a refused or failed operation fails the event with the
cloud's reason, and a cloud briefly failing is waited out. A cloud that cannot be asked
while the operation runs is asked again until the operation's record says how it ended;
if that is not learnt within the wait, the outcome is unknown (not an ordinary failure)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scheduler.worker.errors import ActionFailed, OutcomeUnknown
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


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Running:
    """``driver.execute(ev)`` in a thread, started once its operation runs in simcloud."""

    def __init__(self, sim: Sim, driver: SimcloudDriver, ev: VmEventMessage) -> None:
        self.result: list[str | None] = []
        self.error: list[BaseException] = []

        def run() -> None:
            try:
                self.result.append(driver.execute(ev, Hold(1)))
            except BaseException as exc:  # reported by outcome()
                self.error.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

        def running() -> bool:
            answer = sim.http.get(f"/v1/operations/{ev.id}")
            return answer.status_code == 200 and answer.json()["state"] == "running"

        wait_for(running, "the operation to start")

    def outcome(self, timeout: float = 15.0) -> str | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the driver is still waiting"
        if self.error:
            raise self.error[0]
        return self.result[0]


def test_a_cloud_that_cannot_be_asked_while_the_operation_runs_is_asked_until_it_answers(
    sim: Sim, driver: SimcloudDriver
) -> None:
    """Every poll fails for longer than the operation takes (far more polls than the ten
    errors the driver used to give up after): the driver waits for the cloud to answer,
    and the success is recorded as learnt late."""
    stop = event("h2-vm2", Action.STOP, params={"duration": 0.5})
    running = Running(sim, driver, stop)
    sim.fault(kind="api", fail_rate=1.0, duration=1.5)
    note = running.outcome()
    assert note is not None and note.startswith("outcome learnt late"), note
    assert "503" in note
    assert sim.vm("h2-vm2")["state"] == "STOPPED"


def test_an_outcome_not_learnt_within_the_wait_is_unknown(sim: Sim) -> None:
    """The cloud cannot be asked until the wait is over: the outcome is unknown (the
    event is dead-lettered), not an ordinary failure — the cloud may still be working."""
    driver = SimcloudDriver(sim.url, TOKEN, timeout=5, poll_interval=0.02, max_wait=1.0)
    try:
        running = Running(sim, driver, event("h2-vm2", Action.STOP, params={"duration": 5}))
        sim.fault(kind="api", fail_rate=1.0)
        with pytest.raises(OutcomeUnknown, match="outcome unknown: the cloud could not be asked"):
            running.outcome()
    finally:
        sim.http.delete("/v1/faults").raise_for_status()
        driver.close()


def test_an_operation_still_running_at_the_end_of_the_wait_is_unknown(sim: Sim) -> None:
    driver = SimcloudDriver(sim.url, TOKEN, timeout=5, poll_interval=0.02, max_wait=0.5)
    try:
        with pytest.raises(OutcomeUnknown, match="outcome unknown: still running after"):
            driver.execute(event("h2-vm2", Action.STOP, params={"duration": 5}), Hold(1))
    finally:
        driver.close()


def test_a_failure_the_cloud_reports_after_a_lapse_is_an_ordinary_failure(
    sim: Sim, driver: SimcloudDriver
) -> None:
    """The VM goes down while it is being stopped, and the cloud cannot be asked for a
    while: the operation's record says it failed, and so does the driver — learnt late."""
    running = Running(sim, driver, event("h1-vm2", Action.STOP, params={"duration": 0.5}))
    sim.fault(kind="api", fail_rate=1.0, duration=1.0)
    sim.fault(kind="vm_down", vm="h1-vm2")
    with pytest.raises(ActionFailed) as failed:
        running.outcome()
    assert not isinstance(failed.value, OutcomeUnknown)
    assert str(failed.value).startswith("simcloud: "), failed.value
    assert "outcome learnt late" in str(failed.value)
