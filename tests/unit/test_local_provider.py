"""The local provider with real processes: what it kills it also reaps (no zombies)."""

from __future__ import annotations

import os
from pathlib import Path

from scheduler.elasticity.model import ProfileConfig
from scheduler.elasticity.providers import LocalProvider


def _state(pid: int) -> str | None:
    """The process's state letter (Z = zombie), None once it is gone and reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def test_a_killed_worker_is_reaped_at_once() -> None:
    provider = LocalProvider("sleep 30", {}, None)
    handle = provider.spawn(ProfileConfig(name="default"), 0.0)
    assert handle.pid is not None and _state(handle.pid) not in (None, "Z")
    provider.stop(handle, graceful=False)
    assert _state(handle.pid) is None  # gone, not a zombie
    assert provider.exited(handle)


def test_a_worker_stopped_gracefully_is_reaped_once_it_exits() -> None:
    provider = LocalProvider("sleep 30", {}, None)
    handle = provider.spawn(ProfileConfig(name="default"), 0.0)
    assert handle.pid is not None
    provider.stop(handle, graceful=True)  # SIGTERM: sleep exits at once
    os.waitid(os.P_PID, handle.pid, os.WEXITED | os.WNOWAIT)  # wait without reaping
    assert provider.exited(handle)  # exited() reaps it
    assert _state(handle.pid) is None
