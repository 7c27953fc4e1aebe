"""The `carousel` command line, run as a user runs it (the installed console script)
against a real stack: simcloud, producer, dispatcher, a worker acting on simcloud and the
elasticity worker, with an API token. A demo burst drains with every event succeeded,
`watch` follows the last batch (or a batch file), `status` shows every service (and one
unreachable), `top` shows the board (paused, then drained), files post, an unknown id is
not found, and refusals are one clear line with their exit code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.processes import Stack, free_port, wait_until
from shared.names import NAME_RULE

TOKEN = "cli-test-token"
#: the console script pip installed beside this interpreter
CAROUSEL = str(Path(sys.executable).parent / "carousel")


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    stack = stack_factory(
        CAROUSEL_API_TOKEN=TOKEN,
        DRIVER="simcloud",
        ELASTICITY_PROFILES='{"default": {"min_workers": 0, "max_workers": 1}}',
    )
    stack.simcloud("--action-seconds", "0.1")
    stack.producer()
    stack.dispatcher()
    stack.worker()
    stack.elasticity()
    return stack


def carousel(
    stack: Stack, tmp_path: Path, *args: str, token: str = TOKEN
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CAROUSEL_PRODUCER_URL": stack.producer_url,
        "CAROUSEL_DISPATCHER_URL": stack.dispatcher_url,
        "CAROUSEL_ELASTICITY_URL": stack.elasticity_url,
        "CAROUSEL_API_TOKEN": token,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [CAROUSEL, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_a_demo_burst_drains_and_status_shows_the_system(stack: Stack, tmp_path: Path) -> None:
    demo = carousel(stack, tmp_path, "demo", "--events", "40", "--duration", "0.5")
    assert demo.returncode == 0, demo.stdout + demo.stderr + stack.logs()
    assert "posted 40 events" in demo.stdout and "succeeded" in demo.stdout

    watched = carousel(stack, tmp_path, "watch", "--json")
    assert watched.returncode == 0, watched.stderr
    statuses = json.loads(watched.stdout)["statuses"]
    assert len(statuses) == 40 and set(statuses.values()) == {"succeeded"}
    batch = tmp_path / "cache" / "carousel" / "last-batch.json"
    again = carousel(stack, tmp_path, "watch", "--batch", str(batch), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["statuses"] == statuses

    status = carousel(stack, tmp_path, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    shown = json.loads(status.stdout)
    assert shown["ready"] == {"producer": "ready", "dispatcher": "ready", "elasticity": "ready"}
    assert shown["dispatcher"]["dispatched_total"] >= 40
    assert "default" in shown["elasticity"]["profiles"]
    table = carousel(stack, tmp_path, "status")
    assert "pool default" in table.stdout and "dispatched / completed" in table.stdout

    nobody = f"http://127.0.0.1:{free_port()}"
    partial = carousel(stack, tmp_path, "--elasticity-url", nobody, "status", "--json")
    assert partial.returncode == 4, partial.stdout + partial.stderr
    assert json.loads(partial.stdout)["ready"]["elasticity"] == "unreachable"
    assert json.loads(partial.stdout)["dispatcher"]["dispatched_total"] >= 40


def test_files_post_and_refusals_are_one_line_with_their_exit_code(
    stack: Stack, tmp_path: Path
) -> None:
    as_json = tmp_path / "events.json"
    as_json.write_text(
        json.dumps([{"host": "h1", "vm": "h1-vm1", "policy": "ops", "action": "heal"}])
    )
    as_csv = tmp_path / "events.csv"
    as_csv.write_text('host,vm,policy,action,payload\nh2,h2-vm1,ops,update,"{""note"": 1}"\n')
    for path in (as_json, as_csv):
        posted = carousel(stack, tmp_path, "post", "--file", str(path), "--watch", "--json")
        assert posted.returncode == 0, posted.stdout + posted.stderr
        assert set(json.loads(posted.stdout)["statuses"].values()) == {"succeeded"}

    refused = carousel(
        stack,
        tmp_path,
        "post",
        "--host",
        "h1",
        "--vm",
        "bad name",
        "--policy",
        "ops",
        "--action",
        "heal",
    )
    assert refused.returncode == 2
    assert "(422): event 1: vm:" in refused.stderr and "Traceback" not in refused.stderr
    assert f"event 1: vm: {NAME_RULE}" in refused.stderr, "the rule in words, not a pattern"
    assert "event 1:" in refused.stderr and refused.stderr.count("event 1:") == 1
    unknown_action = carousel(
        stack,
        tmp_path,
        "post",
        "--host",
        "h1",
        "--vm",
        "h1-vm1",
        "--policy",
        "ops",
        "--action",
        "reboot",
    )
    assert unknown_action.returncode == 2
    assert "event 1: action: Input should be 'heal'" in unknown_action.stderr
    assert unknown_action.stderr.count("\n") == 1, "one line, however long"

    no_token = carousel(
        stack,
        tmp_path,
        "post",
        "--host",
        "h1",
        "--vm",
        "h1-vm1",
        "--policy",
        "ops",
        "--action",
        "heal",
        token="",
    )
    assert no_token.returncode == 4 and "set CAROUSEL_API_TOKEN" in no_token.stderr

    failing = carousel(
        stack,
        tmp_path,
        "post",
        "--host",
        "h1",
        "--vm",
        "h1-vm99",
        "--policy",
        "ops",
        "--action",
        "heal",
        "--watch",
    )
    assert failing.returncode == 1 and "no VM h1-vm99" in failing.stdout

    typo = carousel(stack, tmp_path, "watch", "no-such-event", "--json")
    assert typo.returncode == 1, typo.stdout + typo.stderr
    assert json.loads(typo.stdout)["statuses"] == {"no-such-event": "not found"}

    nobody = f"http://127.0.0.1:{free_port()}"
    unreachable = carousel(stack, tmp_path, "--producer-url", nobody, "watch", "x-1")
    assert unreachable.returncode == 4 and f"cannot reach {nobody}" in unreachable.stderr


def board(stack: Stack, **params: Any) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.get(f"{stack.dispatcher_url}/board", params=params, headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def test_top_shows_the_board_paused_then_drained(stack: Stack, tmp_path: Path) -> None:
    """Paused, three events of h1-vm1 and one of h2-vm1 wait: `top --once` says paused in
    words and lists h1 first by backlog; --search and --hosts narrow the list; resumed and
    drained, the last dispatches are the four, oldest first."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{stack.dispatcher_url}/pause", headers=auth, timeout=10).is_success
    run = uuid.uuid4().hex[:6]
    keys = [("h1", "h1-vm1")] * 3 + [("h2", "h2-vm1")]
    ids = [f"top-{run}-{n}" for n in range(len(keys))]
    events = [
        {"id": i, "host": h, "vm": v, "policy": "ops", "action": "heal"}
        for i, (h, v) in zip(ids, keys, strict=True)
    ]
    path = tmp_path / "events.json"
    path.write_text(json.dumps(events))
    posted = carousel(stack, tmp_path, "post", "--file", str(path))
    assert posted.returncode == 0, posted.stdout + posted.stderr
    wait_until(lambda: board(stack)["totals"]["backlog"] == 4, 30, what="a backlog of 4")

    paused = carousel(stack, tmp_path, "top", "--once")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    shown = paused.stdout
    assert "active, paused" in shown and "backlog 4" in shown, shown
    hosts = re.findall(r"^(h[12])\s+\S+\s+(\d+)\s", shown, re.M)
    assert hosts == [("h1", "3"), ("h2", "1")], shown
    assert "h1/h1-vm1" in shown and "h2/h2-vm1" in shown

    searched = carousel(stack, tmp_path, "top", "--once", "--search", "h2")
    assert "hosts by backlog: 1 of 1 matching 'h2'" in searched.stdout, searched.stdout
    assert not re.search(r"^h1\s", searched.stdout, re.M)
    one = carousel(stack, tmp_path, "top", "--once", "--hosts", "1")
    assert "1 more host match; --search narrows" in one.stdout, one.stdout

    assert httpx.post(f"{stack.dispatcher_url}/resume", headers=auth, timeout=10).is_success
    watched = carousel(stack, tmp_path, "watch", *ids, "--json")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    wait_until(lambda: board(stack)["totals"]["in_flight"] == 0, 30, what="nothing in flight")
    drained = carousel(stack, tmp_path, "top", "--once")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert "active, not paused" in drained.stdout and "nothing runs or waits" in drained.stdout
    dispatched = re.findall(rf"top-{run}-\d", drained.stdout)
    assert sorted(dispatched) == ids, drained.stdout
    assert dispatched.index(ids[0]) < dispatched.index(ids[1]) < dispatched.index(ids[2])

    nobody = f"http://127.0.0.1:{free_port()}"
    unreachable = carousel(stack, tmp_path, "--dispatcher-url", nobody, "top", "--once")
    assert unreachable.returncode == 4 and f"cannot reach {nobody}" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
