"""``python -m scheduler.worker.ping``: exit 0 when this machine's worker answers a Celery
ping over the broker, else 1. It is the worker's healthcheck in docker-compose.yml, so it
needs a fixed ``WORKER_NAME`` (``%h`` is this host's name, as for ``celery worker -n``)."""

from __future__ import annotations

import socket
import sys

from scheduler.celery_app import create_celery
from scheduler.worker.settings import WorkerSettings


def node_name(pattern: str, hostname: str) -> str:
    """The node name Celery gives ``-n pattern`` on ``hostname`` (only ``%h`` is expanded)."""
    return pattern.replace("%h", hostname)


def main() -> int:
    settings = WorkerSettings()
    if not settings.worker_name:
        print("WORKER_NAME is not set: nothing to ping", file=sys.stderr)
        return 1
    name = node_name(settings.worker_name, socket.gethostname())
    app = create_celery(settings)
    try:
        replies = app.control.ping(destination=[name], timeout=5.0)
    finally:
        app.close()
    if any(name in reply for reply in replies):
        return 0
    print(f"worker {name} did not answer a ping", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
