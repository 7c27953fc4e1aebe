"""docker-compose.yml run for real (``make compose-test``), driven as the README tells a
user: its quick-start commands run as written, Flower's API behind its password, the
healthchecks gating on readiness, a worker killed and the dispatcher restarted under load
with nothing lost, history kept across ``down``/``up``, two dispatcher shards (``--scale
dispatcher=2``) splitting the partitions, and ``down -v`` leaving nothing.

The tests share one compose project (tests/compose/conftest.py) and run in file order:
the last one tears it down."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.compose import ComposeProject
from harness.processes import free_ports_in_a_row
from shared.partition_leases import partition_of
from tests.compose.conftest import PORTS, home_of, host_url

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- checked by make compose-test -->"
TERMINAL = {"succeeded", "failed"}


# -- the README's commands ---------------------------------------------------------------
def readme_commands(text: str) -> list[tuple[str, Any]]:
    """The commands of the fenced block after MARKER, each with the JSON its next comment
    line shows (None when the comment is prose or absent). A command runs on while its
    lines end in a backslash or its single quotes are open."""
    block = text.split(MARKER, 1)[1].split("```sh\n", 1)[1].split("\n```", 1)[0]
    commands: list[tuple[str, Any]] = []
    pending = ""
    for line in block.splitlines():
        if pending:
            pending += "\n" + line
        elif line.startswith("#"):
            if commands and commands[-1][1] is None:
                commands[-1] = (commands[-1][0], _json_or_none(line[1:].strip()))
            continue
        else:
            pending = line
        if pending.endswith("\\") or pending.count("'") % 2:
            continue
        commands.append((pending, None))
        pending = ""
    return commands


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _contains(actual: Any, expected: Any) -> bool:
    """``expected`` is a sub-document of ``actual``."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _contains(actual[k], v) for k, v in expected.items()
        )
    return bool(actual == expected)


def on_project_ports(command: str, project: ComposeProject) -> str:
    """The README's ``localhost:<port>`` pointed at this project's host ports."""
    for var, port in PORTS.items():
        command = re.sub(rf"localhost:{port}\b", f"localhost:{project.env[var]}", command)
    return command


def run_shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def wait_for(what: str, probe: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


# -- clients -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def producer(project: ComposeProject) -> Iterator[httpx.Client]:
    token = project.env["CAROUSEL_API_TOKEN"]
    with httpx.Client(
        base_url=host_url(project, "PRODUCER_PORT"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ) as client:
        yield client


def statuses(producer: httpx.Client, ids: list[str]) -> dict[str, str]:
    out = {}
    for event_id in ids:
        try:
            response = producer.get(f"/events/{event_id}")
        except httpx.TransportError:
            out[event_id] = "unreachable"
            continue
        out[event_id] = response.json()["status"] if response.status_code == 200 else "?"
    return out


# -- the tests, in order -----------------------------------------------------------------
def test_every_service_is_healthy_and_nothing_is_published_but_the_apis(
    project: ComposeProject,
) -> None:
    preflight = subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            project.container("preflight"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert preflight == ["exited", "0"]

    def published(service: str) -> list[str]:
        out = subprocess.run(
            ["docker", "port", project.container(service)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sorted(line.split(" -> ")[1] for line in out.splitlines())

    assert published("rabbitmq") == [] and published("postgres") == []
    assert published("worker") == []
    for var, service in (
        ("PRODUCER_PORT", "producer"),
        ("DISPATCHER_PORT", "dispatcher"),
        ("ELASTICITY_PORT", "elasticity"),
        ("FLOWER_PORT", "flower"),
        ("SIMCLOUD_PORT", "simcloud"),
    ):
        assert published(service) == [f"127.0.0.1:{project.env[var]}"], service


def test_readme_quick_start_commands_work_as_written(
    project: ComposeProject, producer: httpx.Client
) -> None:
    commands = readme_commands(README.read_text())
    curls = [(c, e) for c, e in commands if c.startswith("curl")]
    setup = [c for c, _ in commands if not c.startswith("curl")]  # `. ./.env`, in each shell
    assert len(curls) >= 4, commands
    for command, expected in curls:
        local = "\n".join([*setup, on_project_ports(command, project)])
        last: list[str] = []

        def answers(local: str = local, expected: Any = expected, last: list[str] = last) -> bool:
            done = run_shell(local, home_of(project))
            last[:] = [done.stdout, done.stderr]
            try:
                body = json.loads(done.stdout)
            except ValueError:
                return False
            return done.returncode == 0 and (expected is None or _contains(body, expected))

        try:
            wait_for(f"`{command}` to answer {expected}", answers, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast output: {last}") from None


def test_the_command_line_in_a_container_runs_a_demo_to_the_end(project: ComposeProject) -> None:
    """The README's `docker compose exec producer carousel demo`: the containers know the
    services' addresses and the token."""
    demo = project.run(
        "exec",
        "-T",
        "producer",
        "carousel",
        "demo",
        "--events",
        "40",
        "--duration",
        "0.5",
        timeout=300,
    )
    assert "posted 40 events" in demo and "succeeded" in demo, demo
    status = project.run("exec", "-T", "producer", "carousel", "status", "--json")
    shown = json.loads(status)
    assert set(shown["ready"].values()) == {"ready"}, shown["ready"]


def test_the_live_page_gathers_every_service_in_the_containers(project: ComposeProject) -> None:
    """The dispatcher serves the live page, and reaches the producer and the elasticity
    worker by the containers' names (CAROUSEL_PRODUCER_URL, CAROUSEL_ELASTICITY_URL)."""
    dispatcher = f"http://127.0.0.1:{project.env['DISPATCHER_PORT']}"
    assert httpx.get(f"{dispatcher}/live").status_code == 200
    auth = {"Authorization": f"Bearer {project.env['CAROUSEL_API_TOKEN']}"}
    pool = httpx.get(f"{dispatcher}/board/pool", headers=auth).json()
    assert pool["status"]["ok"] and pool["history"]["ok"], pool
    monitor = httpx.get(f"{dispatcher}/board/monitor", headers=auth).json()
    assert monitor["ok"] and monitor["body"]["enabled"], monitor
    board = httpx.get(f"{dispatcher}/board", headers=auth).json()
    assert board["state"] == "active", board["state"]


def test_flower_api_needs_its_password(project: ComposeProject, producer: httpx.Client) -> None:
    flower = host_url(project, "FLOWER_PORT")
    user, password = project.env["FLOWER_BASIC_AUTH"].split(":", 1)
    assert httpx.get(f"{flower}/api/workers").status_code == 401
    assert httpx.get(f"{flower}/api/workers", auth=(user, "wrong")).status_code == 401
    workers = httpx.get(f"{flower}/api/workers?refresh=1", auth=(user, password), timeout=30)
    assert workers.status_code == 200
    assert any(name.startswith("carousel-worker@") for name in workers.json()), workers.json()
    ids = producer.post(
        "/events", json={"host": "h3", "vm": "h3-vm2", "policy": "ops", "action": "update"}
    ).json()["ids"]
    wait_for("the event to succeed", lambda: statuses(producer, ids)[ids[0]] == "succeeded")

    def listed() -> bool:
        tasks = httpx.get(f"{flower}/api/tasks", auth=(user, password), timeout=10).json()
        return ids[0] in tasks and tasks[ids[0]]["state"] == "SUCCESS"

    wait_for("Flower to list the task by its event id", listed, timeout=60)


def test_the_producer_is_unready_while_the_broker_refuses_its_login(
    project: ComposeProject, producer: httpx.Client
) -> None:
    user, password = "carousel", project.env["RABBITMQ_DEFAULT_PASS"]
    rabbit = project.container("rabbitmq")

    def set_password(value: str) -> None:
        subprocess.run(
            ["docker", "exec", rabbit, "rabbitmqctl", "-q", "change_password", user, value],
            check=True,
            capture_output=True,
        )

    def healthcheck() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "docker",
                "exec",
                project.container("producer"),
                "python",
                "-m",
                "shared.healthcheck",
                "http://localhost:8000/readyz",
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    set_password("not-" + password)
    try:
        project.run("restart", "producer")
        wait_for("the producer to answer", lambda: "answered" in healthcheck().stderr, 60)
        failing = healthcheck()
        assert failing.returncode == 1 and "503" in failing.stderr, failing
        refused = producer.post(
            "/events", json={"host": "h1", "vm": "h1-vm3", "policy": "ops", "action": "heal"}
        )
        assert refused.status_code == 503
    finally:
        set_password(password)
    wait_for("the producer to be ready again", lambda: healthcheck().returncode == 0, 120)
    project.wait_healthy(["producer"], timeout=120)


def test_nothing_is_lost_when_the_worker_is_killed_and_the_dispatcher_restarted(
    project: ComposeProject, producer: httpx.Client
) -> None:
    vms = [(f"h{h}", f"h{h}-vm{v}") for h in (1, 2, 3) for v in (1, 2, 3, 4)]
    events = [
        {"host": host, "vm": vm, "policy": f"p{i % 3}", "action": ("heal", "update")[i % 2]}
        for i, (host, vm) in enumerate(vms * 10)
    ]
    ids: list[str] = []
    for start in range(0, len(events), 40):
        response = producer.post("/events", json={"events": events[start : start + 40]})
        assert response.status_code == 202, response.text
        ids += response.json()["ids"]
    wait_for(
        "some events to finish",
        lambda: list(statuses(producer, ids[:30]).values()).count("succeeded") >= 5,
    )
    project.run("kill", "worker")
    project.run("restart", "dispatcher")
    project.run("start", "worker")
    project.wait_healthy(["dispatcher", "worker"], timeout=240)

    def all_done() -> bool:
        return all(s in TERMINAL for s in statuses(producer, ids).values())

    wait_for(f"all {len(ids)} events to finish", all_done, timeout=300)
    final = statuses(producer, ids)
    assert set(final.values()) == {"succeeded"}, {
        k: v for k, v in final.items() if v != "succeeded"
    }


def test_history_survives_down_and_up(project: ComposeProject, producer: httpx.Client) -> None:
    ids = producer.post(
        "/events", json={"host": "h2", "vm": "h2-vm4", "policy": "ops", "action": "update"}
    ).json()["ids"]
    wait_for("the event to succeed", lambda: statuses(producer, ids)[ids[0]] == "succeeded")
    project.run("down", "--timeout", "10")
    assert project.leftovers()["containers"] == []
    project.run("up", "-d", timeout=600)
    project.wait_healthy()
    assert statuses(producer, ids)[ids[0]] == "succeeded"


def test_two_shards_split_the_partitions_and_run_every_event_once(
    project: ComposeProject, producer: httpx.Client
) -> None:
    """The guide's `DISPATCHER_PARTITIONS=16 DISPATCHER_PORT=<a range> docker compose up
    -d --scale dispatcher=2`, on the running stack: both dispatchers healthy, each an
    active shard on a host port of the range, the 16 partitions split between them, and
    every event run once, dispatched by the shard serving its host."""
    first = free_ports_in_a_row(2)
    env = {**project.env, "DISPATCHER_PARTITIONS": "16", "DISPATCHER_PORT": f"{first}-{first + 1}"}
    env_file = home_of(project) / "shards.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    shards = ComposeProject(
        name=project.name, env_file=env_file, env=env, volumes_before=project.volumes_before
    )
    shards.run("up", "-d", "--scale", "dispatcher=2", timeout=600)
    shards.wait_healthy(timeout=240)
    dispatchers = shards.run("ps", "-q", "dispatcher").split()
    assert len(dispatchers) == 2, dispatchers

    def health(container: str) -> str:
        fmt = "{{.State.Health.Status}}"
        return subprocess.run(
            ["docker", "inspect", "-f", fmt, container], capture_output=True, text=True
        ).stdout.strip()

    wait_for("both dispatchers healthy", lambda: {health(c) for c in dispatchers} == {"healthy"})
    urls = []
    for index in (1, 2):
        published = shards.run("port", f"--index={index}", "dispatcher", "8001").strip()
        address, port = published.rsplit(":", 1)
        assert address == "127.0.0.1" and int(port) in (first, first + 1), published
        urls.append(f"http://127.0.0.1:{port}")
    assert len(set(urls)) == 2, urls

    def serving(url: str) -> set[int]:
        stats = httpx.get(f"{url}/stats", timeout=10).json()
        assert stats["mode"] == "shards", stats
        return set(stats["shard"]["serving"])

    def split() -> bool:
        a, b = (serving(url) for url in urls)
        return bool(a and b) and not a & b and a | b == set(range(16))

    wait_for("the two shards to split the 16 partitions", split, timeout=120)
    parts = [serving(url) for url in urls]
    # either answers for both, from the ledger: each at its container's own address
    listed = httpx.get(f"{urls[0]}/shards", timeout=10).json()["shards"]
    assert len(listed) == 2 and len({shard["url"] for shard in listed}) == 2, listed
    assert all(shard["url"].endswith(":8001") for shard in listed), listed
    events = [
        {"host": f"h{h}", "vm": f"h{h}-vm{v}", "policy": "ops", "action": "update"}
        for h in (1, 2, 3)
        for v in (1, 2, 3, 4)
    ]
    response = producer.post("/events", json={"events": events * 2})
    assert response.status_code == 202, response.text
    ids = response.json()["ids"]

    def all_done() -> bool:
        return all(s in TERMINAL for s in statuses(producer, ids).values())

    wait_for(f"all {len(ids)} events to finish", all_done, timeout=180)
    assert set(statuses(producer, ids).values()) == {"succeeded"}
    assert {producer.get(f"/events/{i}").json()["attempts"] for i in ids} == {1}
    dispatched = [
        {d["event_id"]: d["host"] for d in httpx.get(f"{url}/dispatches?limit=1000").json()}
        for url in urls
    ]
    assert sorted(i for by_one in dispatched for i in by_one if i in ids) == sorted(ids)
    for by_one, owned in zip(dispatched, parts, strict=True):
        assert {partition_of(host, 16) for host in by_one.values()} <= owned


def test_down_v_leaves_nothing_behind(project: ComposeProject) -> None:
    project.run("down", "-v", "--timeout", "10")
    assert project.leftovers() == {"containers": [], "networks": [], "volumes": []}
    assert project.new_volumes() == []
