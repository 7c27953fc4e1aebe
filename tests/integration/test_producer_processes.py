"""Two producer processes (real ones, one of them with PRODUCER_PROCESSES=2 worker
processes on its port) sharing one ledger: a removal served by one races events for the
same VM served by the other, and no accepted event lands in a removed VM."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest

from harness.processes import Stack, free_port, wait_until

pytestmark = pytest.mark.integration


def test_a_removal_in_one_process_never_races_an_event_into_the_vm_in_another(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory()
    stack.producer()
    stack.dispatcher()
    stack.worker()
    other_port = str(free_port())
    stack.producer(PRODUCER_PORT=other_port, PRODUCER_PROCESSES="2")
    accepting = stack.producer_url
    removing = f"http://127.0.0.1:{other_port}"
    # (Stack waits on the first producer's port: wait for this one's too)
    wait_until(lambda: httpx.get(f"{removing}/readyz").status_code == 200, 60, what="ready")
    accepted: list[str] = []
    refused: list[int] = []
    removals: list[int] = []
    done = threading.Event()

    def post_events() -> None:
        with httpx.Client(base_url=accepting, timeout=30) as http:
            for i in range(60):
                batch = [
                    {"host": "h", "vm": "v", "policy": p, "action": "heal", "id": f"e{i}{p}"}
                    for p in ("p", "q")
                ]
                r = http.post("/events", json={"events": batch})
                if r.status_code == 202:
                    accepted.extend(r.json()["ids"])
                else:
                    assert r.status_code == 409 and "being removed" in r.text, r.text
                    refused.append(i)
        done.set()

    def remove() -> None:
        with httpx.Client(base_url=removing, timeout=30) as http:
            while not done.is_set():
                r = http.delete("/hosts/h/vms/v")
                assert r.status_code in (200, 404, 409), r.text
                removals.append(r.status_code)

    threads = [threading.Thread(target=post_events), threading.Thread(target=remove)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert accepted, (refused, removals)

    # every accepted event runs to its end: none was deleted with its VM, nor left in a
    # queue nobody consumes (a VM removed between its accept and its run)
    def all_succeeded() -> bool:
        return all(
            httpx.get(f"{accepting}/events/{i}").json()["status"] == "succeeded" for i in accepted
        )

    wait_until(all_succeeded, 120, what=f"{len(accepted)} accepted events succeeded")
    # and the removal went through at the end, once the VM had nothing unfinished
    wait_until(
        lambda: httpx.delete(f"{removing}/hosts/h/vms/v").status_code in (200, 404),
        30,
        what="the VM removed",
    )
    print(
        f"removals: {removals.count(200)} done, {removals.count(409)} refused; "
        f"{len(refused)} batches refused as being removed"
    )
