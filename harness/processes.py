"""Waiting on conditions, and running Carousel services as real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")
BIN = Path(sys.executable).parent


def wait_until(
    cond: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            got = cond()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if got:
                return got
            last = got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports_in_a_row(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now (for dispatchers that
    choose from a span of ports, or a compose range)."""
    for _ in range(100):
        first = free_port()
        if first + count - 1 > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


class Service:
    """One Carousel service (a console script) as a child process with its own log file."""

    def __init__(
        self,
        script: str,
        env: dict[str, str],
        log_dir: Path,
        ready_url: str | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.script = script
        self.env = env
        self.log_path = log_dir / f"{script}-{int(time.time() * 1000)}.log"
        self.ready_url = ready_url
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Service:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [str(BIN / self.script), *self.args],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait and self.ready_url:
            wait_until(self._ready, 60, what=f"{self.script} ready ({self.log_tail()})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.script} exited {self.proc.returncode}:\n{self.log_tail()}")
        assert self.ready_url is not None
        return httpx.get(self.ready_url, timeout=2).status_code == 200

    def kill(self) -> None:
        """kill -9 the whole process group (prefork children included)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Stack:
    """Producer, dispatcher and workers of one test, as real processes."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.producer_url = f"http://127.0.0.1:{env['PRODUCER_PORT']}"
        self.dispatcher_url = f"http://127.0.0.1:{env['DISPATCHER_PORT']}"
        self.elasticity_url = f"http://127.0.0.1:{env['ELASTICITY_PORT']}"
        self.flower_url = f"http://127.0.0.1:{env.get('FLOWER_PORT', 5555)}"
        self.services: list[Service] = []

    def _start(
        self,
        script: str,
        ready: str | None,
        extra: dict[str, str] | None,
        args: list[str] | None = None,
    ) -> Service:
        svc = Service(script, {**self.env, **(extra or {})}, self.log_dir, ready, args)
        self.services.append(svc)
        return svc.start()

    def producer(self, **extra: str) -> Service:
        """The producer, asking this stack's dispatcher what holds a queued event."""
        extra = {"DISPATCHER_URL": self.dispatcher_url, **extra}
        return self._start("carousel-producer", f"{self.producer_url}/readyz", extra)

    def dispatcher(self, **extra: str) -> Service:
        return self._start("carousel-dispatcher", f"{self.dispatcher_url}/readyz", extra)

    def another_dispatcher(self, **extra: str) -> tuple[Service, str]:
        """One more dispatcher beside :meth:`dispatcher` (a standby, or another shard),
        on a port of its own, not waited for; with the URL of its admin API."""
        port = free_port()
        svc = self._start("carousel-dispatcher", None, {"DISPATCHER_PORT": str(port), **extra})
        return svc, f"http://127.0.0.1:{port}"

    def elasticity(self, **extra: str) -> Service:
        return self._start("carousel-elasticity", f"{self.elasticity_url}/readyz", extra)

    def worker(self, **extra: str) -> Service:
        return self._start("carousel-worker", None, extra)

    def flower(self, **extra: str) -> Service:
        """``carousel-flower`` on ``FLOWER_PORT`` (its ``/healthcheck`` needs no login)."""
        return self._start("carousel-flower", f"{self.flower_url}/healthcheck", extra)

    def simcloud(self, *args: str, **extra: str) -> Service:
        """The simulated cloud (``python -m simcloud``) on ``SIMCLOUD_PORT``; ``args`` are
        its command-line flags (``--hosts 3 --vms-per-host 4 ...``)."""
        url = f"http://127.0.0.1:{self.env['SIMCLOUD_PORT']}/healthz"
        return self._start("python", url, extra, ["-m", "simcloud", *args])

    @property
    def profiles(self) -> list[str]:
        """The worker profiles this stack's ACTION_PROFILES names."""
        return list(json.loads(self.env.get("ACTION_PROFILES") or "{}"))

    def stop(self) -> None:
        for svc in reversed(self.services):
            svc.stop()

    def logs(self, lines: int = 40) -> str:
        return "\n\n".join(f"--- {s.script}\n{s.log_tail(lines)}" for s in self.services)
