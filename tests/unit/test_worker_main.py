"""The worker's start-up and shutdown lines (scheduler/worker/main.py): which of Celery's
log records are dropped or lowered, as pure filters on log records."""

from __future__ import annotations

import logging

from scheduler.worker.main import StartupLines, remote_shutdown_is_no_warning


def record(
    msg: str, *args: object, level: int = logging.INFO, func: str = "f"
) -> logging.LogRecord:
    return logging.LogRecord("celery", level, __file__, 1, msg, args, None, func)


def test_the_ready_line_replaces_celerys_start_up_lines_but_a_reconnect_is_still_logged() -> None:
    startup = StartupLines()
    assert not startup.filter(record("Connected to %s", "amqp://guest:**@broker:5672//"))
    assert startup.broker == "amqp://guest:**@broker:5672//"  # for the ready line
    assert not startup.filter(record("%s ready.", "w1@host"))
    startup.ready = True
    assert startup.filter(record("Connected to %s", "amqp://guest:**@broker:5672//"))
    assert startup.filter(record("Task %s received", "x"))


def test_a_remote_shutdown_is_logged_at_info_with_its_reason() -> None:
    shutdown = record("retired by the elasticity worker", level=logging.WARNING, func="shutdown")
    assert remote_shutdown_is_no_warning(shutdown)
    assert (shutdown.levelno, shutdown.levelname) == (logging.INFO, "INFO")
    assert shutdown.getMessage() == "shutdown asked remotely: retired by the elasticity worker"
    other = record("something else", level=logging.WARNING, func="revoke")
    assert remote_shutdown_is_no_warning(other) and other.levelno == logging.WARNING
