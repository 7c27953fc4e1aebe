"""Where each Carousel service answers on this machine: its port, and the variable that
moves it (the service reads the same one). The command line's defaults, and the
dispatcher's way to the producer and the elasticity worker for the live page."""

from __future__ import annotations

import os
from collections.abc import Mapping

#: each service's port on this machine, and the variable that moves it (under `make up`,
#: from the environment or .env)
PORTS: Mapping[str, tuple[str, int]] = {
    "producer": ("PRODUCER_PORT", 8000),
    "dispatcher": ("DISPATCHER_PORT", 8001),
    "elasticity": ("ELASTICITY_PORT", 8002),
    "flower": ("FLOWER_PORT", 5555),
}


def local_url(service: str, env: Mapping[str, str] | None = None) -> str:
    """``service`` on this machine: ``http://127.0.0.1:$PRODUCER_PORT`` (8000), ..."""
    variable, port = PORTS[service]
    return f"http://127.0.0.1:{(os.environ if env is None else env).get(variable) or port}"
