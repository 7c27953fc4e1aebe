"""A private RabbitMQ node for tests (and the fault suite, :mod:`harness.faults`) that kill
or restart a broker.

It has its own node name, ports, data and log directories, and no plugins; it is stopped
by its own pid. The machine's shared RabbitMQ is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import uuid
from pathlib import Path

from harness.processes import free_port, wait_until

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


def available() -> bool:
    return os.path.exists(RABBITMQ_SERVER) and shutil.which("erl") is not None


class PrivateBroker:
    """One node. ``name``, ``config`` (extra rabbitmq.conf lines) and ``home`` (where
    Erlang keeps its cookie: nodes of one cluster share it) are for
    :class:`harness.rabbit_cluster.RabbitCluster`."""

    def __init__(
        self,
        base: Path,
        name: str | None = None,
        config: tuple[str, ...] = (),
        home: Path | None = None,
    ) -> None:
        self.base = base
        self.port = free_port()
        self.dist_port = free_port()
        self.name = name or f"carousel-test-{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text("\n".join(["loopback_users = none", *config]) + "\n")

    def start(self) -> None:
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
            **({"HOME": str(self.home)} if self.home else {}),
        }
        with open(self.base / "server.out", "ab") as out:
            self.proc = subprocess.Popen(
                [RABBITMQ_SERVER],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._accepting, 90, what=f"private RabbitMQ {self.name} on {self.port}")

    def ctl(self, *args: str) -> str | None:
        """``rabbitmqctl -n <this node> args...`` (with the node's cookie, under ``home``
        when it has one); stdout, or None if it failed."""
        result = subprocess.run(
            [RABBITMQCTL, "-n", self.name, *args],
            env={**os.environ, **({"HOME": str(self.home)} if self.home else {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout if result.returncode == 0 else None

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"private RabbitMQ exited:\n{(self.base / 'server.out').read_text()[-3000:]}"
            )
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9 this node (its own process group only)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
