"""The check `make up` runs before starting anything (``python -m shared.brokercheck``):
with no broker at AMQP_URL, `make up` stops at once with one line naming the URL and how
to start RabbitMQ, and starts nothing; a broker refusing the login says so; and a stack
already running on the same CAROUSEL_PREFIX draws a warning, not a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from harness.processes import Stack, free_port

ROOT = Path(__file__).resolve().parents[2]


def brokercheck(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.brokercheck"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_up_without_a_broker_says_where_it_looked_and_starts_nothing() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}//"  # nothing listens there
    done = subprocess.run(
        ["make", "up"],
        cwd=ROOT,
        env={**os.environ, "AMQP_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("carousel:")]
    assert len(said) == 1, done.stderr
    masked = url.replace("guest@", "**@")
    assert said[0].startswith(f"carousel: no RabbitMQ at AMQP_URL: {masked} does not answer")
    assert "`rabbitmq-server -detached`" in said[0] and "set AMQP_URL" in said[0]
    assert "started (pid=" not in done.stdout, "honcho started something"

    alone = brokercheck(AMQP_URL=url)
    assert alone.returncode == 1 and alone.stderr.strip() == said[0]


def test_a_broker_refusing_the_login_is_named(amqp_url: str) -> None:
    parts = urlsplit(amqp_url)
    wrong = parts._replace(netloc=f"nobody-{free_port()}:wrong@{parts.hostname}:{parts.port}")
    done = brokercheck(AMQP_URL=urlunsplit(wrong))
    assert done.returncode == 1
    assert "refused the login: set the user and password in AMQP_URL" in done.stderr
    assert "wrong" not in done.stderr, "the password is masked"


def test_a_stack_already_on_the_prefix_draws_a_warning_not_a_failure(
    stack_factory: Callable[..., Stack], amqp_url: str, prefix: str
) -> None:
    quiet = brokercheck(AMQP_URL=amqp_url, CAROUSEL_PREFIX=prefix)
    assert (quiet.returncode, quiet.stderr) == (0, "")

    stack = stack_factory()
    stack.dispatcher()  # consumes <prefix>.completions
    done = brokercheck(AMQP_URL=amqp_url, CAROUSEL_PREFIX=prefix)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(
        f"carousel: warning: another Carousel seems to run with CAROUSEL_PREFIX={prefix} on "
    )
    assert f"{prefix}.completions has 1 consumer" in done.stderr
    assert f"CAROUSEL_PREFIX={prefix}-2 make up" in done.stderr
