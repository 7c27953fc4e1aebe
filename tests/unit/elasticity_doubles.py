"""Test doubles of the elasticity worker's adapters, shared by its unit tests: a provider
whose workers are names in a dict; the remote control and the clock live in
:mod:`harness.elasticity_doubles` (the fault suite uses them too)."""

from __future__ import annotations

from harness.elasticity_doubles import Clock, FakeControl
from scheduler.elasticity.model import ProfileConfig
from scheduler.elasticity.providers import WorkerHandle, node_name

__all__ = ["Clock", "FakeControl", "InMemoryProvider"]


class InMemoryProvider:
    """Workers are names in a dict. ``fail_for`` makes spawning for those profiles
    raise, as a broken provider would."""

    def __init__(self, fail_for: set[str] | None = None) -> None:
        self.running: dict[str, WorkerHandle] = {}
        self.stopped: list[tuple[str, bool]] = []
        self.fail_for = fail_for or set()

    def spawn(self, profile: ProfileConfig, now: float) -> WorkerHandle:
        if profile.name in self.fail_for:
            raise OSError(f"cannot start a worker for {profile.name}")
        handle = WorkerHandle(node_name(profile.name), profile.name, now)
        self.running[handle.name] = handle
        return handle

    def stop(self, handle: WorkerHandle, graceful: bool = True) -> None:
        self.running.pop(handle.name, None)
        self.stopped.append((handle.name, graceful))

    def exited(self, handle: WorkerHandle) -> bool:
        return handle.name not in self.running
