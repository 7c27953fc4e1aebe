"""Cancel and coalesce end to end: producer, dispatcher and Celery workers as real
processes on a real broker, actions recorded by a webhook receiver (EffectRecorder)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from harness.processes import Stack, wait_until
from tests.effects import EffectRecorder

ENDED = ("succeeded", "failed", "cancelled")
#: the console script pip installed beside this interpreter
CAROUSEL = str(Path(sys.executable).parent / "carousel")


def post(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{stack.producer_url}/events", json=body, timeout=30)
    assert r.status_code == 202, r.text
    answer: dict[str, Any] = r.json()
    return answer


def cancel(stack: Stack, event_id: str) -> httpx.Response:
    return httpx.delete(f"{stack.producer_url}/events/{event_id}", timeout=30)


def status(stack: Stack, event_id: str) -> str:
    r = httpx.get(f"{stack.producer_url}/events/{event_id}", timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def stats(stack: Stack) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{stack.dispatcher_url}/stats", timeout=10).json()
    return body


def ev(event_id: str, vm: str = "vm1", **extra: Any) -> dict[str, Any]:
    return {"host": "h1", "vm": vm, "policy": "p", "action": "heal", "id": event_id, **extra}


def test_a_cancelled_event_is_skipped_when_its_key_is_served(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    """Three events on one key while no dispatcher runs; the middle one is cancelled (the
    ledger alone decides). Once the dispatcher and a worker start, the first and third
    run, in order; the second stays cancelled and never reaches the cloud."""
    stack = stack_factory(DRIVER="webhook", WEBHOOK_URL=recorder.url, MAX_PARALLEL=1)
    stack.producer()
    ids = post(stack, {"events": [ev("k-1"), ev("k-2"), ev("k-3")]})["ids"]
    assert ids == ["k-1", "k-2", "k-3"]
    got = cancel(stack, "k-2")
    assert got.status_code == 200, got.text
    assert got.json()["status"] == "cancelled"
    assert cancel(stack, "k-2").status_code == 200  # again: the same

    stack.dispatcher()
    stack.worker()
    wait_until(lambda: all(status(stack, i) in ENDED for i in ids), 60, what="every event ended")
    assert [status(stack, i) for i in ids] == ["succeeded", "cancelled", "succeeded"]
    assert recorder.order == ["k-1", "k-3"]
    assert recorder.calls["k-2"] == 0
    wait_until(lambda: stats(stack)["in_flight"] == 0, 30, what="every slot freed")
    assert stats(stack)["dispatched_total"] == 2
    # refused once it ran
    refused = cancel(stack, "k-1")
    assert refused.status_code == 409 and refused.json()["status"] == "succeeded"


def test_cancel_racing_dispatch_either_cancels_or_runs_once(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    """Events are dispatched while cancels for them arrive, many times over: each ends
    either cancelled (200) and never executed, or running on (409) and executed exactly
    once. No slot is kept by a cancelled head."""
    stack = stack_factory(
        DRIVER="webhook", WEBHOOK_URL=recorder.url, MAX_PARALLEL=3, WORKER_CONCURRENCY=4
    )
    stack.producer()
    stack.dispatcher()
    stack.worker()
    rng = random.Random(21)
    answers: dict[str, int] = {}
    with ThreadPoolExecutor(8) as pool:
        for round_ in range(6):
            batch = [
                ev(f"r{round_}-{vm}-{n}", vm=f"vm{vm}", payload={"delay": 0.02})
                for n in range(5)
                for vm in range(4)
            ]
            ids = post(stack, {"events": batch})["ids"]
            rng.shuffle(ids)
            for event_id, got in zip(ids, pool.map(lambda i: cancel(stack, i), ids), strict=True):
                assert got.status_code in (200, 409), got.text
                answers[event_id] = got.status_code
    wait_until(
        lambda: all(status(stack, i) in ENDED for i in answers), 120, what="every event ended"
    )
    for event_id, code in answers.items():
        final = status(stack, event_id)
        if code == 200:
            assert final == "cancelled", event_id
            assert recorder.calls[event_id] == 0, event_id
        else:
            assert final == "succeeded", event_id
            assert recorder.calls[event_id] == 1, event_id
    executed = sum(code == 409 for code in answers.values())
    assert 0 < executed < len(answers), "no race: every cancel went the same way"
    wait_until(lambda: stats(stack)["in_flight"] == 0, 30, what="every slot freed")
    assert stats(stack)["dispatched_total"] == executed


def test_coalescing_events_are_answered_with_the_waiting_one(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder
) -> None:
    """While no dispatcher runs: a coalescing event for the same VM, policy and action as
    a waiting one is answered with its id, in the single and the batch form, by the
    event's own field or by COALESCE_POLICIES; it runs once."""
    stack = stack_factory(DRIVER="webhook", WEBHOOK_URL=recorder.url, COALESCE_POLICIES="auto")
    stack.producer()
    assert post(stack, ev("a")) == {"ids": ["a"], "coalesced": [False]}
    assert post(stack, ev("b", coalesce=True)) == {"ids": ["a"], "coalesced": [True]}
    batch = {"events": [ev("c", coalesce=True), ev("d", action="migrate", coalesce=True)]}
    assert post(stack, batch) == {"ids": ["a", "d"], "coalesced": [True, False]}
    # without coalesce: a second copy
    assert post(stack, ev("e")) == {"ids": ["e"], "coalesced": [False]}
    # the policies of COALESCE_POLICIES coalesce unless the event says otherwise
    auto = {**ev("f"), "policy": "auto"}
    assert post(stack, auto)["ids"] == ["f"]
    assert post(stack, {**auto, "id": "g"}) == {"ids": ["f"], "coalesced": [True]}
    assert post(stack, {**auto, "id": "h", "coalesce": False})["ids"] == ["h"]
    for never in ("b", "c", "g"):
        assert httpx.get(f"{stack.producer_url}/events/{never}", timeout=10).status_code == 404

    stack.dispatcher()
    stack.worker()
    ran = ["a", "d", "e", "f", "h"]
    wait_until(lambda: all(status(stack, i) == "succeeded" for i in ran), 60, what="all ran")
    assert sorted(recorder.calls) == ran
    assert all(n == 1 for n in recorder.calls.values())
    # a dispatched event is no longer joined: the next copy is queued
    assert post(stack, ev("i", coalesce=True)) == {"ids": ["i"], "coalesced": [False]}


def test_carousel_cancel_and_watch(stack_factory: Callable[..., Stack], tmp_path: Path) -> None:
    """The command line, as a user runs it: `carousel cancel` cancels (exit 0), says
    which it could not (exit 1), and `carousel watch` ends at cancelled with exit 0."""
    stack = stack_factory()
    stack.producer()
    post(stack, {"events": [ev("c-1"), ev("c-2")]})
    done = carousel(stack, tmp_path, "cancel", "c-2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "c-2: cancelled" in done.stdout
    unknown = carousel(stack, tmp_path, "cancel", "c-2", "nope", "--json")
    assert unknown.returncode == 1, unknown.stdout + unknown.stderr
    assert json.loads(unknown.stdout) == {"statuses": {"c-2": "cancelled", "nope": "unknown"}}
    watched = carousel(stack, tmp_path, "watch", "c-2", "--json", "--timeout", "30")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert json.loads(watched.stdout)["statuses"] == {"c-2": "cancelled"}

    stack.dispatcher()
    stack.worker()
    wait_until(lambda: status(stack, "c-1") == "succeeded", 60, what="c-1 ran")
    late = carousel(stack, tmp_path, "cancel", "c-1")
    assert late.returncode == 1
    assert "c-1: succeeded already, not cancelled" in late.stdout


def carousel(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CAROUSEL_PRODUCER_URL": stack.producer_url,
        "CAROUSEL_DISPATCHER_URL": stack.dispatcher_url,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [CAROUSEL, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
