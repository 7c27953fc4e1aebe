"""One compose project for the whole module: built and started with the project's own
docker-compose.yml and a fresh ``.env``, on free host ports, and torn down with
``down -v`` at the end. ``make compose-test`` sets ``CAROUSEL_COMPOSE_REQUIRED=1``: then a
missing Docker daemon fails the run instead of skipping it."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.compose import ComposeProject, docker_answers, volume_names
from harness.processes import free_port

REQUIRED = os.environ.get("CAROUSEL_COMPOSE_REQUIRED", "") == "1"

#: host port variable of each published service, and its port inside the compose network
PORTS = {
    "PRODUCER_PORT": 8000,
    "DISPATCHER_PORT": 8001,
    "ELASTICITY_PORT": 8002,
    "FLOWER_PORT": 5555,
    "SIMCLOUD_PORT": 8100,
}


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeProject]:
    if not docker_answers():
        if REQUIRED:
            pytest.fail("no Docker daemon answers (make compose-test starts one)")
        pytest.skip("no Docker daemon answers: run `make compose-test`")
    home = tmp_path_factory.mktemp("compose")
    env = {
        "RABBITMQ_DEFAULT_PASS": secrets.token_hex(12),
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "FLOWER_BASIC_AUTH": f"admin:{secrets.token_hex(12)}",
        "CAROUSEL_API_TOKEN": secrets.token_hex(16),
        "SIMCLOUD_TOKEN": secrets.token_hex(16),
        # short cloud actions keep the load test brief
        "SIMCLOUD_ACTION_SECONDS": "0.3",
        **{name: str(free_port()) for name in PORTS},
    }
    env_file = home / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    name = f"carousel-ct-{uuid.uuid4().hex[:6]}"
    stack = ComposeProject(name=name, env_file=env_file, env=env, volumes_before=volume_names())
    try:
        stack.run("up", "-d", "--build", timeout=1200)
        stack.wait_healthy()
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", "--timeout", "10", check=False)


def host_url(project: ComposeProject, port_var: str) -> str:
    return f"http://127.0.0.1:{project.env[port_var]}"


def home_of(project: ComposeProject) -> Path:
    """The folder of the project's ``.env``: README commands run there."""
    return project.env_file.parent
