"""Workers whose clocks disagree run every action once (issue 19): one worker 60 s
behind, one 60 s ahead (``harness/skewclock.c`` moves their wall clocks), a PostgreSQL
ledger, claims a few times shorter than the actions. Had each process stamped and
judged the claims' leases with its own clock, the slow worker's claims would look
expired to everyone else as soon as it made them, the fast worker would take over live
claims, and the same action would run twice, at once, on one VM. The ledger's clock
(``shared/clock.py``) is the only one that counts.

Needs a C compiler (to build the clock library) and PostgreSQL: without either the test
skips locally, and fails in CI (``CI=true``), where ``.ci/run`` installs gcc.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import skewclock
from harness.processes import Stack, wait_until
from harness.skewclock import skewed
from tests.effects import EffectRecorder
from tests.integration.test_e2e import all_finished, event, post
from tests.ledgers import fresh_ledger_url

#: how far each worker's clock is off
SKEW = 60
LEASE = 3
#: each action holds this long at the receiver: several leases, so claims are renewed
HOLD = 4 * LEASE
VMS = 6
EVENTS_PER_VM = 2


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """The stack's ledger on PostgreSQL, a fresh database (the ``prefix`` fixture also
    reads its keys to delete the test's queues)."""
    with fresh_ledger_url("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def clock_library(tmp_path: Path) -> Path:
    try:
        return skewclock.build(tmp_path)
    except skewclock.NoCompiler as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_workers_on_skewed_clocks_run_every_action_once(
    stack_factory: Callable[..., Stack], recorder: EffectRecorder, clock_library: Path
) -> None:
    """Two workers, one 60 s slow and one 60 s fast, take turns claiming actions that
    outlast their lease four times over; the sweeper looks for expired claims every
    second. Every event's action is called once, by its first claim, and no two calls
    overlap on one VM (the receiver counts both)."""
    slow, fast = skewed(clock_library, -SKEW), skewed(clock_library, +SKEW)
    # the fault is really there: each faked clock is about a minute off ours
    assert skewclock.offset(slow) < -SKEW / 2 and skewclock.offset(fast) > SKEW / 2
    stack = stack_factory(
        DRIVER="webhook",
        WEBHOOK_URL=recorder.url,
        CLAIM_LEASE_SECONDS=LEASE,
        SWEEP_INTERVAL=1,
        RESEND_AFTER=2,
        MAX_PARALLEL=VMS,
        # each worker could run every VM's action at once: a task sent again finds a free
        # process on either worker at once
        WORKER_CONCURRENCY=VMS,
    )
    stack.producer()
    stack.dispatcher()
    name = stack.env["CAROUSEL_PREFIX"]  # node names are the broker's, not the topology's
    stack.worker(WORKER_NAME=f"{name}-slow@%h", **slow)
    stack.worker(WORKER_NAME=f"{name}-fast@%h", **fast)
    events = [
        {
            "host": "h1",
            "vm": f"vm{v}",
            "policy": "p",
            "action": "heal",
            "id": f"skew-{v}-{n}",
            "payload": {"delay": HOLD},
        }
        for n in range(EVENTS_PER_VM)
        for v in range(VMS)
    ]
    ids = post(stack, events)
    wait_until(lambda: all_finished(stack, ids), 6 * HOLD * EVENTS_PER_VM, what="all finished")

    twice = {i: n for i, n in recorder.calls.items() if n > 1}
    assert not twice, (
        f"actions run more than once: {twice}, tokens {recorder.tokens}; "
        f"at most {recorder.max_per_vm} calls at once on one VM"
    )
    assert sorted(recorder.calls) == sorted(ids)
    assert recorder.max_per_vm == 1, f"{recorder.max_per_vm} calls at once on one VM"
    for i in ids:
        got = event(stack, i)
        assert (got["status"], got["attempts"]) == ("succeeded", 1), got
    workers = {event(stack, i)["worker"].split("@")[0] for i in ids}
    assert workers == {f"{name}-slow", f"{name}-fast"}, f"both workers ran actions: {workers}"
