"""The ``cloud-api`` fault's judgement (:mod:`harness.faults.cloudops`): simcloud's
operation records against each event's final view, as a table of cases."""

from __future__ import annotations

from typing import Any

import pytest

from harness.faults.cloudapi import DRIVER_TIMEOUT, SLOW, STALLED
from harness.faults.cloudops import LABEL, Op, judge
from scheduler.worker.simcloud_driver import START_PATIENCE

T0 = 100.0


def op(
    event: str,
    start: float,
    done: float | None,
    state: str = "succeeded",
    vm: str = "h1-vm1",
    op_id: str | None = None,
    error: str | None = None,
) -> Op:
    record: dict[str, Any] = {
        "id": op_id or event,
        "action": "upgrade",
        "target": vm,
        "state": state,
        "error": error,
        "started_at": start,
        "done_at": done,
        "params": {LABEL: event},
    }
    return Op.of(record)


def row(status: str, error: str | None = None) -> dict[str, Any]:
    return {"status": status, "error": error, "dispatched_at": T0 + 1}


UNKNOWN = "operation e1: outcome unknown: the cloud could not be asked for 30 s"
BUSY = "simcloud: VM h1-vm1 is UPDATING: another operation is under way"

S = row("succeeded")
CASES = [
    pytest.param({"e1": S, "e2": S}, [op("e1", 1, 2), op("e2", 2, 3)], [], id="one after another"),
    pytest.param(
        {"e1": row("failed", "simcloud: no"), "e2": S},
        [op("e1", 1, 1, "failed"), op("e2", 1, 2)],
        [],
        id="the cloud failed it",
    ),
    pytest.param(
        {"e1": row("failed", UNKNOWN), "e2": None},
        [op("e1", 1, 2)],
        ["lost e2"],
        id="an unknown outcome the cloud carried out; a 404",
    ),
    pytest.param({"e1": S, "e2": S}, [op("e2", 1, 2)], ["lost e1"], id="succeeded, no operation"),
    pytest.param(
        {"e1": row("failed", "poll error"), "e2": S},
        [op("e1", 1, 2), op("e2", 3, 4)],
        ["lost e1"],
        id="failed, the cloud did it",
    ),
    pytest.param(
        {"e1": row("failed", "gave up"), "e2": S},
        [op("e2", 1, 2)],
        ["lost e1"],
        id="failed, the cloud never ran it",
    ),
    pytest.param(
        {"e1": row("running"), "e2": S},
        [op("e1", 1, None, "running"), op("e2", 1, 2, vm="h2-vm1")],
        ["stuck e1"],
        id="not final",
    ),
    pytest.param(
        {"e1": S, "e2": S},
        [op("e1", 1, 2), op("e1", 3, 4, op_id="e1-2"), op("e2", 5, 6)],
        ["duplicate e1"],
        id="run twice under two ids",
    ),
    pytest.param(
        {"e1": row("failed", "poll error"), "e2": row("failed", BUSY)},
        [op("e1", 1, 3), op("e2", 2, 2, "failed", error=BUSY)],
        ["lost e1", "violation e2"],
        id="freed while the cloud worked, the next refused",
    ),
    pytest.param(
        {"e1": S, "e2": S},
        [op("e1", 1, 3), op("e2", 2, 4)],
        ["violation e2"],
        id="two at once on a VM",
    ),
    pytest.param(
        {"e1": S, "e2": S},
        [op("e1", 1, None, "running"), op("e2", 5, 6)],
        ["lost e1", "violation e2"],
        id="the first still running",
    ),
    pytest.param(
        {"e1": S, "e2": S},
        [op("e1", 1, 3), op("e2", 2, 4, vm="h2-vm1")],
        [],
        id="at once on two VMs",
    ),
    pytest.param(
        {"e1": row("failed", BUSY), "e2": S},
        [op("e1", 2, 2, "failed", error=BUSY), op("e2", 2, 3)],
        [],
        id="a refusal takes no time",
    ),
    pytest.param(
        {"e1": S, "e2": S},
        [op("e1", 1, 2), op("e2", 3, 4), op("x9", 5, 6)],
        ["phantom x9"],
        id="an operation of no event",
    ),
]


@pytest.mark.parametrize(("statuses", "ops", "expected"), CASES)
def test_judge(
    statuses: dict[str, dict[str, Any] | None], ops: list[Op], expected: list[str]
) -> None:
    posted = {"e1": T0, "e2": T0}
    found = judge(posted, statuses, ops)
    assert sorted(f"{a.kind} {a.event_id}" for a in found) == sorted(expected), found
    assert all(a.at >= T0 for a in found)


def test_an_operation_without_a_label_belongs_to_the_event_its_id_names() -> None:
    record = {
        "id": "e1",
        "action": "upgrade",
        "target": "h1-vm1",
        "state": "running",
        "started_at": 1.0,
        "done_at": None,
        "params": {},
    }
    assert Op.of(record).event == "e1"
    assert Op.of(record | {"params": {LABEL: "e7"}}).event == "e7"


def test_the_fault_is_slow_then_stalled_and_over_before_a_start_is_given_up() -> None:
    assert SLOW.delay < DRIVER_TIMEOUT < STALLED.delay
    assert SLOW.seconds + STALLED.seconds < START_PATIENCE
