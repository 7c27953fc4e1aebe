"""A process whose wall clock is off: ``skewclock.c`` built as an LD_PRELOAD library.

Only ``CLOCK_REALTIME`` moves (``time.time()``, ``datetime.now()``, ``gettimeofday``);
the monotonic clock, sleeps and timed waits stay the kernel's, as on a machine whose
clock is wrong. Absolute waits on ``CLOCK_REALTIME`` would not match (nothing in
Carousel's services makes them: Python's sleeps and lock timeouts are monotonic).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SOURCE = Path(__file__).with_name("skewclock.c")


class NoCompiler(RuntimeError):
    """No C compiler (``cc``) to build the library with."""


def build(directory: Path) -> Path:
    """Compile the library into ``directory``; its path."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise NoCompiler("no C compiler (cc) to build harness/skewclock.c: install gcc")
    out = directory / "libskewclock.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SOURCE), "-ldl"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def skewed(library: Path, seconds: float) -> dict[str, str]:
    """The environment that puts a process's wall clock ``seconds`` off."""
    return {"LD_PRELOAD": str(library), "SKEWCLOCK_SECONDS": str(seconds)}


def offset(env: dict[str, str]) -> float:
    """How far a Python process started with ``env`` finds the wall clock from ours."""
    before = time.time()
    out = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**os.environ, **env},
        capture_output=True,
        check=True,
        text=True,
        timeout=30,
    )
    return float(out.stdout) - (before + time.time()) / 2
