"""A RabbitMQ in a container, started through testcontainers, for the tests that kill or
restart a broker: used when a Docker daemon answers and the image is on this machine
(``deploy/standin/build`` makes one where no registry is reachable); otherwise
:class:`harness.private_broker.PrivateBroker`, a private node. Both offer ``url``,
``start()``, ``kill()`` (SIGKILL) and ``stop()``, and never touch the machine's shared
RabbitMQ. :func:`killable_broker` picks one and records which, for the suite's summary."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Protocol

import kombu

from harness import private_broker
from harness.compose import docker_answers
from harness.processes import free_port, wait_until

IMAGE = "rabbitmq:3.13-management"
#: "container (testcontainers, <image>)" or "private node (<binary>)", per broker started
USED: list[str] = []


class KillableBroker(Protocol):
    url: str

    def start(self) -> None: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...


def image_present(image: str = IMAGE) -> bool:
    done = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return done.returncode == 0


class ContainerBroker:
    """One container, its AMQP port bound to a fixed host port so that its URL survives a
    kill and a start (the data stays in the container until :meth:`stop` removes it)."""

    def __init__(self, image: str = IMAGE) -> None:
        # testcontainers' reaper (Ryuk) is an image from a registry: stop() cleans up instead
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        from testcontainers.core.container import DockerContainer

        self.port = free_port()
        self.url = f"amqp://carousel:carousel-test@127.0.0.1:{self.port}//"
        self.container = (
            DockerContainer(image)
            .with_bind_ports(5672, self.port)
            .with_env("RABBITMQ_DEFAULT_USER", "carousel")
            .with_env("RABBITMQ_DEFAULT_PASS", "carousel-test")
        )
        self._created = False

    def start(self) -> None:
        if self._created:
            self.container.get_wrapped_container().start()
        else:
            self.container.start()
            self._created = True
        wait_until(self._accepting, 120, interval=0.5, what=f"RabbitMQ container on {self.port}")

    def _accepting(self) -> bool:
        # Docker's port proxy accepts TCP before the broker listens: log in over AMQP
        try:
            with kombu.Connection(self.url, connect_timeout=2) as conn:
                conn.connect()
            return True
        except Exception:
            return False

    def kill(self) -> None:
        """SIGKILL the broker (the container stays, with its data)."""
        self.container.get_wrapped_container().kill()

    def stop(self) -> None:
        if self._created:
            self.container.stop()


def killable_broker(base: Path) -> KillableBroker | None:
    """A container when Docker answers and has the image, else a private node when
    rabbitmq-server is installed, else None."""
    if docker_answers() and image_present():
        USED.append(f"container (testcontainers, {IMAGE})")
        return ContainerBroker()
    if private_broker.available():
        USED.append(f"private node ({private_broker.RABBITMQ_SERVER})")
        return private_broker.PrivateBroker(base)
    return None
