"""Test doubles of the elasticity worker's adapters, shared by its unit tests: a provider
whose workers are names in a dict, a remote control that records what it is told, and a
clock that moves only when a test moves it."""

from __future__ import annotations

from scheduler.elasticity.model import ProfileConfig
from scheduler.elasticity.providers import WorkerHandle, node_name


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


class FakeControl:
    """Celery's remote control: records the calls; ``busy`` nodes hold tasks, ``alive``
    nodes answer a ping."""

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.alive: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def cancel_consumer(self, queue: str, node: str) -> None:
        self.calls.append(("cancel", node))

    def add_consumer(self, queue: str, node: str) -> None:
        self.calls.append(("add", node))

    def holds_tasks(self, node: str) -> bool:
        return node in self.busy

    def shutdown(self, node: str) -> None:
        self.calls.append(("shutdown", node))

    def ping(self, node: str) -> bool:
        self.calls.append(("ping", node))
        return node in self.alive


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
