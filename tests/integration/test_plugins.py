"""A plug-in package installed with pip and used by Carousel's own processes, without an
edit to Carousel: tests/plugins/carousel_echo registers a driver (``echo``) and a
monitoring policy kind (``hot_vm``) by entry point, as any package would.

pip builds and installs it (offline: no index, no build isolation) into a directory of
its own that the services get on ``PYTHONPATH``, rather than into the environment the
tests run in: the lookup is the same (the installed ``.dist-info`` on ``sys.path``), and
no other test — this run's or one running beside it in the same environment — sees the
plug-in or depends on it being uninstalled."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from harness.processes import BIN, Stack, wait_until
from shared.db import events
from shared.store import Store

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "carousel_echo"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where pip installed the plug-in (a copy of its source is built: pip builds in
    the source tree, which is the repository's)."""
    source = tmp_path_factory.mktemp("plugin-src") / "carousel_echo"
    shutil.copytree(PLUGIN, source)
    site = tmp_path_factory.mktemp("plugin-site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    done = subprocess.run(
        [*pip, "--no-build-isolation", "--target", str(site), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(site.glob("carousel_echo-1.0.dist-info/entry_points.txt"))
    return str(site)


@pytest.fixture
def ledger(db_url: str) -> Iterator[Store]:
    store = Store.connect(db_url)
    yield store
    store.engine.dispose()


def echoed(path: Path) -> list[dict[str, Any]]:
    """The lines the echo driver wrote, one per action it ran."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_bad_plug_in_driver_name_or_setting_stops_the_worker_saying_what_to_fix(
    plugin_path: str,
) -> None:
    def start(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "carousel-worker")],
            env={**_environ(), "PYTHONPATH": plugin_path, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    unknown = start(DRIVER="ech")
    assert unknown.returncode == 1
    [line] = unknown.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(
        "carousel-worker: refusing to start: DRIVER=ech: unknown driver 'ech'; known: echo, "
    )
    assert "simulated, webhook" in line and "'carousel.drivers'" in line
    unset = start(DRIVER="echo")
    assert unset.returncode == 1
    assert unset.stderr.strip() == (
        "carousel-worker: refusing to start: DRIVER=echo: ECHO_FILE: Field required"
    )


def test_a_driver_from_an_installed_package_runs_events_end_to_end(
    stack_factory: Callable[..., Stack], plugin_path: str, tmp_path: Path
) -> None:
    out = tmp_path / "echo.jsonl"
    stack = stack_factory(DRIVER="echo", ECHO_FILE=out, PYTHONPATH=plugin_path)
    stack.producer()
    stack.dispatcher()
    stack.worker()
    posted = [
        {"host": "h1", "vm": f"vm{i}", "policy": "ops", "action": "resize", "id": f"echo-{i}"}
        for i in range(6)
    ]
    r = httpx.post(f"{stack.producer_url}/events", json={"events": posted}, timeout=30)
    assert r.status_code == 202, r.text
    ids = r.json()["ids"]

    def finished() -> list[dict[str, Any]] | None:
        got = [httpx.get(f"{stack.producer_url}/events/{i}", timeout=10).json() for i in ids]
        return got if all(e["status"] in ("succeeded", "failed") for e in got) else None

    done = wait_until(finished, 90, what="the echo driver ran every event")
    assert {e["status"] for e in done} == {"succeeded"}
    assert all(e["error"].startswith("echoed by pid ") for e in done)  # the driver's note
    lines = echoed(out)
    assert sorted(line["id"] for line in lines) == sorted(ids)  # each action once
    assert {line["action"] for line in lines} == {"resize"}


def test_a_policy_kind_from_an_installed_package_raises_events(
    stack_factory: Callable[..., Stack], plugin_path: str, tmp_path: Path, ledger: Store
) -> None:
    out = tmp_path / "echo.jsonl"
    policies = tmp_path / "policies.yaml"
    policies.write_text(
        "policies:\n  - {name: hot, kind: hot_vm, threshold: 0.9, action: migrate}\n"
    )
    stack = stack_factory(
        MONITOR_SOURCE="simcloud",
        POLICIES_FILE=policies,
        DRIVER="echo",
        ECHO_FILE=out,
        PYTHONPATH=plugin_path,
    )
    stack.simcloud("--hosts", "2", "--vms-per-host", "2")
    stack.producer()
    stack.dispatcher()
    stack.worker()
    sources = f"{stack.producer_url}/monitor/status"
    wait_until(
        lambda: (
            httpx.get(sources, timeout=10).json()["sources"][0]["stream"]
            in ("following", "polling")
        ),
        60,
        what="the producer following simcloud",
    )
    hot = {"kind": "utilisation", "vm": "h2-vm1", "cpu": 0.95}
    r = httpx.post(f"{stack.env['SIMCLOUD_URL']}/v1/faults", json=hot, timeout=10)
    assert r.status_code == 200, r.text

    def raised() -> list[dict[str, Any]] | None:
        query = sa.select(events).where(events.c.policy == "hot")
        with ledger.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        return rows if rows and rows[0]["status"] in ("succeeded", "failed") else None

    [event] = wait_until(raised, 90, what="the hot_vm policy's event run")
    assert (event["host"], event["vm"], event["action"], event["status"]) == (
        "h2",
        "h2-vm1",
        "migrate",
        "succeeded",
    )
    assert event["id"].startswith("mon-")
    shown = httpx.get(f"{stack.producer_url}/events/{event['id']}", timeout=10).json()
    assert shown["payload"]["cpu"] == 0.95
    assert shown["payload"]["cause"]["type"] == "UtilisationChanged"
    assert [line["id"] for line in echoed(out)] == [event["id"]]


def _environ() -> dict[str, str]:
    """This process's environment without the driver settings a developer may have set."""
    return {k: v for k, v in os.environ.items() if k not in ("DRIVER", "ECHO_FILE")}
