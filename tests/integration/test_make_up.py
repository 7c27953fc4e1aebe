"""`make up` as a user runs it: simcloud, the producer watching it, dispatcher, the
elasticity worker (which starts the one worker, acting on simcloud) and Flower via honcho;
once all are ready, one banner with every address and Flower's login (with no
FLOWER_BASIC_AUTH, a password made for the run); no line per HTTP request; Ctrl-C stops
them all, the spawned worker included."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx

from carousel_cli import ready
from harness.processes import free_port, free_ports_in_a_row, wait_until
from shared.partition_leases import partition_of

ROOT = Path(__file__).resolve().parents[2]
BANNER = "Carousel is ready:"


def _banner(output: str, services: int = 5) -> list[str]:
    """The banner's lines, a heading and one per service, without honcho's ``banner.1 | ``
    prefix; none until all are printed."""
    lines = [line.split("| ", 1)[1] for line in output.splitlines() if " banner.1 " in line]
    start = next((i for i, line in enumerate(lines) if line.startswith(BANNER)), len(lines))
    block = lines[start : start + 1 + services]
    return block if len(block) == 1 + services else []


def _make_up_env(amqp_url: str, prefix: str, db_url: str, ports: dict[str, int]) -> dict[str, str]:
    """The environment of a `make up` on ``ports``, with make up's own defaults, not ours,
    and Flower's password as a first run has it: none."""
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "CAROUSEL_PREFIX": prefix,
        "CAROUSEL_DB_URL": db_url,
        **{k: str(v) for k, v in ports.items()},
        "SIMCLOUD_URL": f"http://127.0.0.1:{ports['SIMCLOUD_PORT']}",
        "SIMCLOUD_ACTION_SECONDS": "0.2",
    }
    for unset in ("MONITOR_SOURCE", "DRIVER", "FLOWER_BASIC_AUTH", "DISPATCHER_PORT_SPAN"):
        env.pop(unset, None)
    return env


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Ctrl-C in the terminal: every process of the group stops."""
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(30)
    children = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True)
    assert children.stdout.strip() == "", f"left running:\n{children.stdout}\n{log.read_text()}"


def test_make_up_serves_the_contract_and_ctrl_c_stops_everything(
    amqp_url: str, prefix: str, db_url: str, tmp_path: Path
) -> None:
    ports = {
        name: free_port()
        for name in (
            "PRODUCER_PORT",
            "DISPATCHER_PORT",
            "ELASTICITY_PORT",
            "FLOWER_PORT",
            "SIMCLOUD_PORT",
        )
    }
    env = _make_up_env(amqp_url, prefix, db_url, ports)
    log = tmp_path / "make-up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["make", "up"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    producer = f"http://127.0.0.1:{ports['PRODUCER_PORT']}"
    flower = f"http://127.0.0.1:{ports['FLOWER_PORT']}"
    try:
        # the README: the banner says when it is ready, where everything is, and the login
        banner = wait_until(
            lambda: _banner(log.read_text(errors="replace")), 180, 0.2, what="the banner"
        )
        for name, address in [
            ("producer", f"{producer}   API reference {producer}/docs"),
            ("dispatcher", f"http://127.0.0.1:{ports['DISPATCHER_PORT']}/live   the live page"),
            ("elasticity", f"http://127.0.0.1:{ports['ELASTICITY_PORT']}/status"),
            ("flower", f"{flower}   log in as admin, password "),
            ("simcloud", f"{env['SIMCLOUD_URL']}/v1/state"),
        ]:
            assert any(line.split()[:1] == [name] and address in line for line in banner), (
                f"{name}: {address!r} not in the banner:\n" + "\n".join(banner)
            )
        live = f"http://127.0.0.1:{ports['DISPATCHER_PORT']}/live"
        for url in (f"{producer}/readyz", f"{producer}/docs", f"{flower}/healthcheck", live):
            assert httpx.get(url).status_code == 200, url
        assert f'href="{live}"' in httpx.get(f"{producer}/").text  # linked from the root
        r = httpx.post(
            f"{producer}/events",
            json={
                "host": "h1",
                "vm": "h1-vm1",
                "policy": "ops",
                "action": "pause",
                "id": "demo-1",
            },
        )
        assert r.status_code == 202
        wait_until(
            lambda: httpx.get(f"{producer}/events/demo-1").json()["status"] == "succeeded",
            60,
            what="event succeeded",
        )
        cloud = env["SIMCLOUD_URL"]
        paused = httpx.get(f"{cloud}/v1/state").json()["vms"]
        assert [v["state"] for v in paused if v["name"] == "h1-vm1"] == ["PAUSED"]
        # and the producer watches simcloud (MONITOR_SOURCE=simcloud is make up's default)
        wait_until(
            lambda: (
                httpx.get(f"{producer}/monitor/status").json()["sources"][0]["stream"]
                == "following"
            ),
            60,
            what="the producer following simcloud's stream",
        )
        wait_until(
            lambda: httpx.get(f"{flower}/api/tasks").status_code == 401,
            60,
            what="flower up, asking for credentials",
        )
        said = re.search(r"log in as (\S+), password (\S+)$", "\n".join(banner), re.M)
        assert said, banner
        user, password = said.groups()
        assert user == "admin"
        assert httpx.get(f"{flower}/api/tasks", auth=("admin", "carousel")).status_code == 401
        tasks = wait_until(
            lambda: httpx.get(f"{flower}/api/tasks", auth=(user, password)).json(),
            60,
            what="flower listing the task",
        )
        assert tasks["demo-1"]["state"] == "SUCCESS"
        elastic = f"http://127.0.0.1:{ports['ELASTICITY_PORT']}"
        workers = httpx.get(f"{elastic}/status").json()["profiles"]["default"]["workers"]
        pids = [w["pid"] for w in workers]
        assert len(pids) == 1  # the one worker, started by the elasticity worker
        output = log.read_text(errors="replace")
        assert output.count(BANNER) == 1, "the banner is printed once"
        assert '"GET /events/demo-1' not in output, "no line per HTTP request by default"
    finally:
        _stop(proc, log)
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids),
        30,
        what="the spawned worker stopped too",
    )


def test_make_up_with_two_shards_splits_the_partitions_between_them(
    amqp_url: str, prefix: str, db_url: str, tmp_path: Path
) -> None:
    """`make up SHARDS=2`: two dispatchers, each an active shard on a port of its own
    (DISPATCHER_PORT and the next one free of the other services'), splitting the 16
    partitions; the banner lists both once both are ready, and each event runs once,
    dispatched by the shard serving its host."""
    first = free_ports_in_a_row(2)
    ports = {
        "PRODUCER_PORT": free_port(),
        "DISPATCHER_PORT": first,
        "ELASTICITY_PORT": free_port(),
        "FLOWER_PORT": free_port(),
        "SIMCLOUD_PORT": free_port(),
    }
    env = _make_up_env(amqp_url, prefix, db_url, ports)
    env.pop("DISPATCHER_PARTITIONS", None)  # make up's 16
    shards = ready.shard_urls(2, env)
    log = tmp_path / "make-up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["make", "up", "SHARDS=2"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    producer = f"http://127.0.0.1:{ports['PRODUCER_PORT']}"
    try:
        banner = wait_until(
            lambda: _banner(log.read_text(errors="replace"), services=6),
            180,
            0.2,
            what="the banner",
        )
        for i, url in enumerate(shards, 1):
            row = f"dispatcher-{i}  {url}/live   the live page of shard {i} of 2"
            assert any(row in line for line in banner), f"{row!r} not in:\n" + "\n".join(banner)

        def serving(url: str) -> set[int]:
            stats = httpx.get(f"{url}/stats", timeout=5).json()
            assert stats["mode"] == "shards", stats
            return set(stats["shard"]["serving"])

        def split() -> list[set[int]]:
            a, b = (serving(url) for url in shards)
            return [a, b] if a and b and not a & b and a | b == set(range(16)) else []

        parts = wait_until(split, 60, 0.5, what="the two shards splitting the 16 partitions")
        # each tells the others where it is: at the port it took
        listed = httpx.get(f"{shards[1]}/shards").json()["shards"]
        assert sorted(shard["url"] for shard in listed) == sorted(shards), listed
        events = [
            {"host": host, "vm": f"{host}-vm1", "policy": "ops", "action": "pause", "id": host}
            for host in ("h1", "h2", "h3")
        ]
        ids = [e["id"] for e in events]
        assert httpx.post(f"{producer}/events", json={"events": events}).status_code == 202

        def finished() -> list[dict[str, Any]]:
            found = [httpx.get(f"{producer}/events/{i}").json() for i in ids]
            return found if all(e["status"] == "succeeded" for e in found) else []

        done = wait_until(finished, 60, 0.5, what="every event to succeed")
        assert [e["attempts"] for e in done] == [1, 1, 1]
        # each was dispatched once, by the shard serving its host's partition
        by_shard = [
            {d["event_id"]: d["host"] for d in httpx.get(f"{url}/dispatches").json()}
            for url in shards
        ]
        for event_id in ids:
            assert sum(event_id in dispatched for dispatched in by_shard) == 1, by_shard
        for dispatched, owned in zip(by_shard, parts, strict=True):
            assert all(partition_of(host, 16) in owned for host in dispatched.values())
        output = log.read_text(errors="replace")
        assert output.count(BANNER) == 1, "the banner is printed once"
    finally:
        _stop(proc, log)
