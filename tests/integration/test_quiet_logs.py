"""A healthy run says what matters and warns about nothing: a worker announces itself in
one line (no banner, no warning about running as root); the scheduler, through a burst
and more than one reconcile, logs no warning (a completion still on its way is not a
"slot whose completion never arrived")."""

from __future__ import annotations

from collections.abc import Callable

from harness.processes import Stack, wait_until
from tests.integration.test_e2e import all_finished, post


def test_a_healthy_run_logs_one_ready_line_per_worker_and_no_warning(
    stack_factory: Callable[..., Stack],
) -> None:
    # reconcile often, actions short: a reconcile lands between a finish and its
    # completion many times over
    stack = stack_factory(RECONCILE_INTERVAL="0.2", SIMULATED_DURATION="0.05")
    stack.producer()
    scheduler = stack.scheduler()
    worker = stack.worker()
    ids = post(
        stack,
        [
            {"host": f"h{i % 4}", "vm": f"v{i % 8}", "policy": "p", "action": "heal"}
            for i in range(120)
        ],
    )
    wait_until(lambda: all_finished(stack, ids), 120, 0.3, what="the burst to finish")

    worker_log = worker.log_path.read_text(errors="replace")
    assert worker_log.count(" ready: ") == 1, worker_log[-2000:]
    for noise in ("[tasks]", "-------------- ", "superuser", "SecurityWarning", "mingle"):
        assert noise not in worker_log, f"{noise!r} in the worker's output"
    scheduler_log = scheduler.log_path.read_text(errors="replace")
    assert "WARNING" not in scheduler_log, scheduler_log[-3000:]
    assert "never arrived" not in scheduler_log
