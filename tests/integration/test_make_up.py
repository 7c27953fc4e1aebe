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

import httpx

from harness.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
BANNER = "Carousel is ready:"


def _banner(output: str) -> list[str]:
    """The banner's lines, a heading and one per service, without honcho's ``banner.1 | ``
    prefix; none until all are printed."""
    lines = [line.split("| ", 1)[1] for line in output.splitlines() if " banner.1 " in line]
    start = next((i for i, line in enumerate(lines) if line.startswith(BANNER)), len(lines))
    block = lines[start : start + 6]
    return block if len(block) == 6 else []


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
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "CAROUSEL_PREFIX": prefix,
        "CAROUSEL_DB_URL": db_url,
        **{k: str(v) for k, v in ports.items()},
        "SIMCLOUD_URL": f"http://127.0.0.1:{ports['SIMCLOUD_PORT']}",
        "SIMCLOUD_ACTION_SECONDS": "0.2",
    }
    # make up's own defaults, not ours; and Flower's password as a first run has it: none
    for unset in ("MONITOR_SOURCE", "DRIVER", "FLOWER_BASIC_AUTH"):
        env.pop(unset, None)
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
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        proc.wait(30)
    children = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True)
    assert children.stdout.strip() == "", f"left running:\n{children.stdout}\n{log.read_text()}"
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids),
        30,
        what="the spawned worker stopped too",
    )
