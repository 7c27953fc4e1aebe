"""Where each Carousel service answers on this machine: its port, and the variable that
moves it (the service reads the same one). The command line's defaults, the
dispatcher's way to the producer and the elasticity worker for the live page, and the
ports dispatchers started together on one machine choose from (shards under `make up`)."""

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
#: the demo cloud `make up` runs beside them (simcloud reads SIMCLOUD_PORT)
SIMCLOUD_PORT = ("SIMCLOUD_PORT", 8100)
#: the highest TCP port
LAST_PORT = 65535


def local_url(service: str, env: Mapping[str, str] | None = None) -> str:
    """``service`` on this machine: ``http://127.0.0.1:$PRODUCER_PORT`` (8000), ..."""
    variable, port = PORTS[service]
    return f"http://127.0.0.1:{(os.environ if env is None else env).get(variable) or port}"


def dispatcher_ports(first: int, span: int, env: Mapping[str, str] | None = None) -> list[int]:
    """The ports a dispatcher may take (``DISPATCHER_PORT_SPAN``), in the order it tries
    them: ``first`` (its ``DISPATCHER_PORT``), then the next ones up, passing over every
    port another service on this machine is set to (``env``'s PRODUCER_PORT,
    ELASTICITY_PORT, FLOWER_PORT and SIMCLOUD_PORT, or their defaults), until there are
    ``span`` of them. Dispatchers started together with the same settings (`make up
    SHARDS=2`) so take one each without ever taking another service's port, and whoever
    knows the settings knows where they are (`make up`'s banner)."""
    environ = os.environ if env is None else env
    others = {
        int(given) if given.isascii() and given.isdigit() else default
        for variable, default in [PORTS[s] for s in PORTS if s != "dispatcher"] + [SIMCLOUD_PORT]
        for given in [environ.get(variable) or str(default)]
    }
    ports = [first]
    port = first + 1
    while len(ports) < span and port <= LAST_PORT:
        if port not in others:
            ports.append(port)
        port += 1
    return ports
