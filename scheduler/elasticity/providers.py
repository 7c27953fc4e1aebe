"""Providers: how workers are started and stopped.

``LocalProvider`` runs each worker as a ``carousel-worker`` process on this machine with a
unique Celery node name. ``KubernetesProvider`` (``kubernetes.py``) sets a Deployment's
replicas instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from scheduler.elasticity.model import ProfileConfig

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class WorkerHandle:
    name: str  # the Celery node name the worker will announce
    profile: str
    spawned_at: float
    pid: int | None = None


class Provider(Protocol):
    def spawn(self, profile: ProfileConfig, now: float) -> WorkerHandle: ...

    def stop(self, handle: WorkerHandle, graceful: bool = True) -> None:
        """graceful: warm shutdown (finish the running task); else kill at once."""

    def exited(self, handle: WorkerHandle) -> bool:
        """The worker's process is gone (for providers that can tell)."""


def node_name(profile: str) -> str:
    return f"elastic.{profile}.{uuid.uuid4().hex[:8]}@{socket.gethostname()}"


def profile_of(node: str) -> str | None:
    """The profile encoded in a node name made by :func:`node_name`, else None."""
    left = node.split("@", 1)[0]
    parts = left.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "elastic" else None


def _stop_with_parent() -> None:
    """In the child, before exec: on Linux, have the kernel send SIGTERM (Celery's warm
    shutdown) when the elasticity worker dies, even by kill -9 — no orphan workers.
    Its own session keeps a Ctrl-C meant for us from reaching it mid-task."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _resolve(argv: list[str]) -> list[str]:
    """Find a bare command on PATH, else beside this interpreter (the venv's bin), so
    ``carousel-worker`` is found however the elasticity worker itself was started."""
    if not argv or "/" in argv[0] or shutil.which(argv[0]):
        return argv
    sibling = Path(sys.executable).parent / argv[0]
    return [str(sibling), *argv[1:]] if sibling.exists() else argv


class LocalProvider:
    """Workers as child processes of the elasticity worker."""

    def __init__(self, command: str, env: dict[str, str], log_dir: Path | None) -> None:
        self.command = _resolve(shlex.split(command))
        self.env = env
        self.log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, profile: ProfileConfig, now: float) -> WorkerHandle:
        name = node_name(profile.name)
        env = {
            **os.environ,
            **self.env,
            "WORKER_NAME": name,
            "WORKER_PROFILE": profile.name,
            "WORKER_CONCURRENCY": str(profile.concurrency),
        }
        out: int | None = None  # inherit: the workers' logs join ours
        log_file = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_file = open(self.log_dir / f"{name.split('@')[0]}.log", "ab")  # noqa: SIM115
            out = log_file.fileno()
        try:
            proc = subprocess.Popen(
                self.command,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_stop_with_parent,
            )
        finally:
            if log_file is not None:
                log_file.close()
        self._procs[name] = proc
        log.info("spawned worker %s (pid %d) for profile %s", name, proc.pid, profile.name)
        return WorkerHandle(name, profile.name, now, proc.pid)

    def stop(self, handle: WorkerHandle, graceful: bool = True) -> None:
        proc = self._procs.get(handle.name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if graceful:
                proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown
                return  # exited() reaps it once it is gone
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)  # reap it: no zombie left behind
            del self._procs[handle.name]

    def exited(self, handle: WorkerHandle) -> bool:
        proc = self._procs.get(handle.name)
        if proc is None:
            return True
        if proc.poll() is None:
            return False
        del self._procs[handle.name]
        return True

    def close(self, timeout: float = 20.0) -> None:
        """Warm-stop every worker this provider started (the elasticity worker is exiting):
        running tasks finish, up to ``timeout`` seconds; then they are killed and their
        tasks redelivered."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
