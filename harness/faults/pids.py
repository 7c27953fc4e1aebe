"""Which process made a call: from a TCP connection to a pid, through ``/proc`` (Linux).

The receiver knows the caller's port; ``/proc/net/tcp`` maps the connection to a socket
inode, and the process holding that inode among the worker processes is the caller —
a prefork pool child, whose pid the fault suite then kills.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROC = Path("/proc")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in (PROC / str(current) / "task").iterdir():
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def socket_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the TCP socket from ``local_port`` to ``remote_port`` (IPv4 or 6)."""
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if (
                    int(local.rsplit(":", 1)[1], 16) == local_port
                    and int(remote.rsplit(":", 1)[1], 16) == remote_port
                ):
                    return int(inode)
    return None


def owner_of(inode: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the socket ``inode``."""
    target = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(PROC / str(pid) / "fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(PROC / str(pid) / "fd" / fd) == target:
                        return pid
    return None


def caller_pid(client_port: int, server_port: int, roots: list[int]) -> int | None:
    """The process, among ``roots`` and their descendants, that connected from
    ``client_port`` to our ``server_port``."""
    inode = socket_inode(client_port, server_port)
    if inode is None:
        return None
    return owner_of(inode, [p for root in roots for p in descendants(root)])
