"""simcloud served over real HTTP by uvicorn in a thread, for the unit tests of the code
that talks to it (the simcloud and OpenStack drivers, the fetchers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from harness.processes import free_port
from simcloud.app import create_app
from simcloud.model import Cloud


@dataclass
class Sim:
    """A running simcloud: its base URL, the Compute endpoint, and an HTTP client."""

    url: str
    compute_url: str
    http: httpx.Client
    token: str

    def state(self) -> dict[str, Any]:
        response = self.http.get("/v1/state")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def vm(self, name: str) -> dict[str, Any]:
        return next(v for v in self.state()["vms"] if v["name"] == name)

    def replicas(self, group: str) -> list[str]:
        return [v["name"] for v in self.state()["vms"] if v["group"] == group]

    def fault(self, **body: Any) -> None:
        self.http.post("/v1/faults", json=body).raise_for_status()


def serve(cloud: Cloud, token: str) -> Iterator[Sim]:
    """Serve ``cloud`` until the generator is closed (use with ``yield from``)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(cloud, token), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="simcloud", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {token}"} if token else {}
    http = httpx.Client(base_url=url, headers=headers, timeout=10)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("simcloud did not start")
            time.sleep(0.02)
        yield Sim(url, f"{url}/compute", http, token)
    finally:
        http.close()
        server.should_exit = True
        thread.join(10)
