"""A healthy run says what matters and warns about nothing: a worker announces itself in
one line (no banner, no "Connected to", no warning about running as root); the
dispatcher, through a burst and more than one reconcile, logs no warning (a completion
still on its way is not a "slot whose completion never arrived"); a worker retired the
way the elasticity worker retires one says why, and warns about nothing either; and no
HTTP service logs a line per request unless ACCESS_LOG asks for it."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import httpx
import pytest

from harness.processes import Stack, wait_until
from scheduler.celery_app import create_celery
from scheduler.dispatcher.settings import DispatcherSettings
from scheduler.elasticity.control import RETIRE_REASON, CeleryControl
from tests.integration.test_e2e import all_finished, post


def test_a_healthy_run_logs_one_ready_line_per_worker_and_no_warning(
    stack_factory: Callable[..., Stack],
) -> None:
    # reconcile often, actions short: a reconcile lands between a finish and its
    # completion many times over
    stack = stack_factory(RECONCILE_INTERVAL="0.2", SIMULATED_DURATION="0.05")
    stack.producer()
    dispatcher = stack.dispatcher()
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
    first = next(line for line in worker_log.splitlines() if line.strip())
    assert " ready: " in first and "broker amqp://" in first, worker_log[:2000]
    for noise in (
        "[tasks]",
        "-------------- ",
        "superuser",
        "SecurityWarning",
        "mingle",
        "Connected to",
    ):
        assert noise not in worker_log, f"{noise!r} in the worker's output"
    dispatcher_log = dispatcher.log_path.read_text(errors="replace")
    assert "WARNING" not in dispatcher_log, dispatcher_log[-3000:]
    assert "never arrived" not in dispatcher_log


def test_a_worker_retired_by_the_elasticity_worker_says_why_and_warns_about_nothing(
    stack_factory: Callable[..., Stack],
) -> None:
    """The elasticity worker's retire steps against a real worker: cancel its consumer,
    check it holds nothing, remote shutdown. Celery would log that shutdown as a WARNING
    ("Got shutdown from remote"); the worker logs the reason, at INFO, and exits."""
    stack = stack_factory()
    name = f"retired-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    worker = stack.worker(WORKER_NAME=name)
    wait_until(
        lambda: " ready: " in worker.log_path.read_text(errors="replace"),
        60,
        what=f"the worker ready ({worker.log_tail()})",
    )
    settings = DispatcherSettings(
        AMQP_URL=stack.env["AMQP_URL"], CAROUSEL_PREFIX=stack.env["CAROUSEL_PREFIX"]
    )
    control = CeleryControl(create_celery(settings))
    control.cancel_consumer(settings.topology.actions_queue.name, name)
    assert not control.holds_tasks(name)
    control.shutdown(name)
    assert worker.proc is not None
    wait_until(lambda: worker.proc.poll() is not None, 30, what="the retired worker to exit")

    worker_log = worker.log_path.read_text(errors="replace")
    assert f"INFO/MainProcess] shutdown asked remotely: {RETIRE_REASON}" in worker_log, worker_log
    assert "WARNING" not in worker_log, worker_log


@pytest.mark.parametrize("access_log", [None, "true"])
def test_requests_are_logged_only_when_access_log_is_on(
    stack_factory: Callable[..., Stack], access_log: str | None
) -> None:
    """Each service that serves HTTP through uvicorn, asked for a page: by default its log
    has no line for it (a watched burst would otherwise fill `make up` with one line per
    poll), with ACCESS_LOG=true it has one (simcloud reads ACCESS_LOG too)."""
    stack = stack_factory(
        ELASTICITY_PROFILES='{"default": {"min_workers": 0, "max_workers": 1}}',
        **({"ACCESS_LOG": access_log} if access_log else {}),
    )
    cloud = f"http://127.0.0.1:{stack.env['SIMCLOUD_PORT']}"
    asked = {
        stack.simcloud(): f"{cloud}/v1/state",
        stack.producer(): f"{stack.producer_url}/events/no-such-event",
        stack.dispatcher(): f"{stack.dispatcher_url}/stats",
        stack.elasticity(): f"{stack.elasticity_url}/status",
    }
    for url in asked.values():
        assert httpx.get(url, timeout=10).status_code in (200, 404), url
    if not access_log:
        stack.stop()  # whatever they had to write is written
    for service, url in asked.items():
        name = service.args[-1] if service.args else service.script
        log = service.log_path.read_text
        if not access_log:
            assert '"GET /' not in log(errors="replace"), f"{name}: {log()[-2000:]}"
            continue
        line = f'"GET /{url.split("/", 3)[3]} HTTP/1.1"'
        wait_until(lambda log=log, line=line: line in log(), 30, what=f"{line} in {name}'s log")
