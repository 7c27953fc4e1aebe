"""Readiness that says what is wrong, with real processes: a dispatcher pointed at a
closed AMQP port says it is not connected to the broker — not that it is a standby —
on /readyz and /stats, and `carousel status` prints that and exits 5 (not ready) while
the other services answer ready."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from harness.processes import Service, Stack, free_port, wait_until

CAROUSEL = str(Path(sys.executable).parent / "carousel")


def test_a_dispatcher_without_a_broker_says_so_and_status_exits_5(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = stack_factory(ELASTICITY_PROFILES='{"default": {"min_workers": 0}}')
    stack.producer()
    stack.elasticity()
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}//"  # nothing listens there
    dispatcher = Service(
        "carousel-dispatcher", {**stack.env, "AMQP_URL": closed}, tmp_path, None
    ).start()
    stack.services.append(dispatcher)

    def readyz() -> httpx.Response:
        return httpx.get(f"{stack.dispatcher_url}/readyz", timeout=5)

    said = wait_until(
        lambda: (r := readyz()).json()["status"].startswith("not connected") and r,
        60,
        what="the dispatcher saying it has no broker",
    )
    assert said.status_code == 503
    reason = said.json()["status"]
    assert reason.startswith("not connected to the broker: ") and "standby" not in reason
    stats = httpx.get(f"{stack.dispatcher_url}/stats", timeout=5).json()
    assert (stats["connected"], stats["standby"]) == (False, False)
    assert stats["not_ready"].startswith("not connected to the broker")

    env = {
        **os.environ,
        "CAROUSEL_PRODUCER_URL": stack.producer_url,
        "CAROUSEL_DISPATCHER_URL": stack.dispatcher_url,
        "CAROUSEL_ELASTICITY_URL": stack.elasticity_url,
        "COLUMNS": "200",
    }
    shown = subprocess.run(
        [CAROUSEL, "status", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 5, shown.stdout + shown.stderr
    ready = json.loads(shown.stdout)["ready"]
    assert ready["producer"] == ready["elasticity"] == "ready"
    assert ready["dispatcher"].startswith("not connected to the broker")
    assert "dispatcher not ready: not connected to the broker" in shown.stderr

    table = subprocess.run(
        [CAROUSEL, "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 5
    assert "not connected to the broker" in table.stdout and "standby" not in table.stdout
