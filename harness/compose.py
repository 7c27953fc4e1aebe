"""docker-compose.yml run for real, as a user runs it: one compose project with its own
name, ``.env`` file and host ports, driven through the ``docker-compose`` (or ``docker
compose``) command line, and torn down with ``down -v``. Used by tests/compose (``make
compose-test``)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"

#: the services with a healthcheck (preflight is a one-shot and exits 0)
HEALTHY = (
    "rabbitmq",
    "postgres",
    "simcloud",
    "producer",
    "dispatcher",
    "worker",
    "elasticity",
    "flower",
)


class ComposeError(RuntimeError):
    """A docker-compose command failed; the message carries its output."""


def compose_command() -> list[str]:
    """``docker-compose`` (Debian's v1) if installed, else the ``docker compose`` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def docker_answers() -> bool:
    """Whether a Docker daemon answers on this machine."""
    if not shutil.which("docker"):
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@dataclass
class ComposeProject:
    """One compose project: ``name`` labels everything it creates."""

    name: str
    env_file: Path
    env: Mapping[str, str]
    files: tuple[Path, ...] = (COMPOSE_FILE,)
    log: list[str] = field(default_factory=list)
    #: the machine's volumes before the first ``up``: what ``down -v`` must get back to
    volumes_before: set[str] = field(default_factory=set)

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        files = [arg for f in self.files for arg in ("-f", str(f))]
        cmd = [*compose_command(), "-p", self.name, "--env-file", str(self.env_file), *files]
        done = subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )
        self.log.append(f"$ {' '.join(args)} -> {done.returncode}")
        if check and done.returncode != 0:
            raise ComposeError(f"compose {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def container(self, service: str) -> str:
        """The id of ``service``'s (first) container."""
        out = self.run("ps", "-q", service).split()
        if not out:
            raise ComposeError(f"no container for {service}")
        return out[0]

    def health(self, service: str) -> str:
        """``healthy``, ``unhealthy``, ``starting``, or the state of a container without one."""
        fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        done = subprocess.run(
            ["docker", "inspect", "-f", fmt, self.container(service)],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() or "missing"

    def wait_healthy(self, services: Iterable[str] = HEALTHY, timeout: float = 300) -> None:
        pending = list(services)
        deadline = time.monotonic() + timeout
        while pending:
            pending = [s for s in pending if self.health(s) != "healthy"]
            if not pending:
                return
            if time.monotonic() > deadline:
                states = {s: self.health(s) for s in pending}
                raise ComposeError(f"not healthy after {timeout:.0f} s: {states}\n{self.logs()}")
            time.sleep(1)

    def logs(self, *services: str, tail: int = 40) -> str:
        return self.run("logs", "--no-color", f"--tail={tail}", *services, check=False)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes that still carry this project's label."""
        label = f"label=com.docker.compose.project={self.name}"
        found: dict[str, list[str]] = {}
        for kind, cmd in (
            ("containers", ["docker", "ps", "-a", "--filter", label, "--format", "{{.Names}}"]),
            ("networks", ["docker", "network", "ls", "--filter", label, "--format", "{{.Name}}"]),
            ("volumes", ["docker", "volume", "ls", "--filter", label, "--format", "{{.Name}}"]),
        ):
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            found[kind] = out.split()
        return found

    def new_volumes(self) -> list[str]:
        """Volumes (named or anonymous) created since ``volumes_before`` was taken."""
        return sorted(volume_names() - self.volumes_before)


def volume_names() -> set[str]:
    out = subprocess.run(
        ["docker", "volume", "ls", "-q"], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())
