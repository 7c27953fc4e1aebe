"""Deployment files: docker-compose.yml, Procfile and .env.example agree with each other
and with the console scripts declared in pyproject.toml.

``docker-compose`` (Debian package ``docker-compose``) and PyYAML are optional locally:
the tests that need them skip with a reason, but fail when ``CI=true``.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROCFILE = ROOT / "Procfile"
ENV_EXAMPLE = ROOT / ".env.example"
PYPROJECT = ROOT / "pyproject.toml"

APP_SERVICES = ("producer", "scheduler", "worker", "elasticity", "flower")
#: `make up` runs these; its workers are spawned by the elasticity worker (minimum 1)
PROCFILE_PROCESSES = ("producer", "scheduler", "elasticity", "flower")
ALL_SERVICES = ("rabbitmq", *APP_SERVICES)
LEDGER_SERVICES = ("producer", "scheduler", "worker", "elasticity")

#: Every variable the services (and compose) read; each must be documented in .env.example.
ENV_VARS = (
    "AMQP_URL",
    "CAROUSEL_PREFIX",
    "CAROUSEL_DB_URL",
    "LOG_LEVEL",
    "CAROUSEL_API_TOKEN",
    "PRODUCER_PORT",
    "SCHEDULER_PORT",
    "MAX_PARALLEL",
    "PER_VM_LIMIT",
    "PER_HOST_LIMIT",
    "WORKER_CONCURRENCY",
    "DRIVER",
    "WEBHOOK_URL",
    "FLOWER_PORT",
    "FLOWER_BASIC_AUTH",
    "RABBITMQ_DEFAULT_USER",
    "RABBITMQ_DEFAULT_PASS",
)

IN_CI = os.environ.get("CI", "").lower() == "true"


def _skip_or_fail(reason: str) -> None:
    """Skip locally; in CI a missing tool means the check silently stops running: fail."""
    if IN_CI:
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


# --------------------------------------------------------------------------- helpers


def _yaml() -> ModuleType:
    try:
        import yaml
    except ModuleNotFoundError:
        _skip_or_fail("PyYAML is not importable in this environment (pip install pyyaml)")
        raise  # unreachable: _skip_or_fail always raises
    return yaml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _yaml().safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def _services(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose.get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services mapping"
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a dict, whether written as a mapping or a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def _with_defaults(value: str) -> str:
    """Resolve ``${VAR:-default}`` the way compose does when neither .env nor the shell set VAR."""
    return _INTERPOLATION.sub(lambda m: m.group("default") or "", value)


def _first_word(command: Any) -> str:
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    assert words, f"empty command: {command!r}"
    return words[0]


def _procfile() -> dict[str, str]:
    entries: dict[str, str] = {}
    for raw in PROCFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        assert sep and command.strip(), f"malformed Procfile line: {raw!r}"
        entries[name.strip()] = command.strip()
    return entries


def _console_scripts() -> dict[str, str]:
    with PYPROJECT.open("rb") as fh:
        scripts = tomllib.load(fh)["project"]["scripts"]
    assert isinstance(scripts, dict)
    return scripts


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


# ---------------------------------------------------------- (a) docker-compose config


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        _skip_or_fail(
            "docker-compose binary not found (apt-get install docker-compose); "
            "cannot validate docker-compose.yml"
        )
        raise AssertionError("unreachable")
    return binary


def _compose_config(env_file: Path) -> str:
    # Shell variables override .env in compose: keep them out so only env_file counts.
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    proc = subprocess.run(
        [_docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        f"docker-compose config failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
    )
    assert "services:" in proc.stdout
    return proc.stdout


def test_compose_config_resolves_with_env_file(tmp_path: Path) -> None:
    values = _env_example()
    values["RABBITMQ_DEFAULT_USER"] = "ci-user"
    values["RABBITMQ_DEFAULT_PASS"] = "ci-secret"
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    out = _compose_config(env_file)

    expected_url = "amqp://ci-user:ci-secret@rabbitmq:5672//"
    assert expected_url in out, "AMQP_URL is not interpolated from the RabbitMQ credentials"
    assert "guest" not in out.lower()
    try:
        import yaml
    except ModuleNotFoundError:
        return  # the textual checks above already ran; structure is covered below
    resolved = yaml.safe_load(out)
    services = _services(resolved)
    assert set(ALL_SERVICES) <= set(services)
    for name in APP_SERVICES:
        assert _environment(services[name])["AMQP_URL"] == expected_url, name
    rabbit_env = _environment(services["rabbitmq"])
    assert rabbit_env["RABBITMQ_DEFAULT_USER"] == "ci-user"
    assert rabbit_env["RABBITMQ_DEFAULT_PASS"] == "ci-secret"


def test_compose_config_resolves_without_dot_env(tmp_path: Path) -> None:
    """``docker compose up`` must work from a fresh clone: every variable has a default."""
    empty = tmp_path / "empty.env"
    empty.write_text("")

    out = _compose_config(empty)

    assert "amqp://carousel:change-me@rabbitmq:5672//" in out
    assert "guest" not in out.lower()


# ------------------------------------------------------------- (b) compose structure


def test_compose_has_all_services(compose: dict[str, Any]) -> None:
    services = _services(compose)
    missing = [name for name in ALL_SERVICES if name not in services]
    assert not missing, f"docker-compose.yml lacks services: {missing}"


def test_rabbitmq_service(compose: dict[str, Any]) -> None:
    rabbit = _services(compose)["rabbitmq"]
    assert str(rabbit.get("image", "")).startswith("rabbitmq:3.13-management")
    test = rabbit.get("healthcheck", {}).get("test")
    assert test, "rabbitmq needs a healthcheck"
    text = test if isinstance(test, str) else " ".join(map(str, test))
    assert "rabbitmq-diagnostics" in text and "ping" in text
    assert any(str(v).split(":")[-1] == "/var/lib/rabbitmq" for v in rabbit.get("volumes", [])), (
        "rabbitmq needs a durable volume on /var/lib/rabbitmq"
    )
    ports = " ".join(map(str, rabbit.get("ports", [])))
    assert "5672:5672" in ports and "15672:15672" in ports


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_waits_for_healthy_rabbitmq(compose: dict[str, Any], name: str) -> None:
    service = _services(compose)[name]
    depends = service.get("depends_on")
    assert isinstance(depends, dict), f"{name}: depends_on must be the long (condition) form"
    assert depends.get("rabbitmq", {}).get("condition") == "service_healthy", name
    if name in ("scheduler", "worker") and "healthcheck" in _services(compose)["producer"]:
        assert depends.get("producer", {}).get("condition") == "service_healthy", name
    assert service.get("build"), f"{name} must be built from the Dockerfile"
    assert service.get("command"), f"{name} needs an explicit command"
    assert service.get("restart") == "unless-stopped", name


def test_producer_healthcheck(compose: dict[str, Any]) -> None:
    test = _services(compose)["producer"].get("healthcheck", {}).get("test")
    assert test, "producer needs a healthcheck"
    text = test if isinstance(test, str) else " ".join(map(str, test))
    assert "urllib" in text and "http://localhost:8000/healthz" in text


@pytest.mark.parametrize("name", LEDGER_SERVICES)
def test_ledger_on_shared_volume(compose: dict[str, Any], name: str) -> None:
    service = _services(compose)[name]
    mounts = [str(v) for v in service.get("volumes", [])]
    data_mounts = [m for m in mounts if m.split(":")[1:2] == ["/data"]]
    assert data_mounts, f"{name} must mount the ledger volume at /data"
    volume = data_mounts[0].split(":")[0]
    assert volume in (compose.get("volumes") or {}), f"{volume} must be a named volume"
    db_url = _with_defaults(_environment(service).get("CAROUSEL_DB_URL", ""))
    assert db_url == "sqlite:////data/carousel.db", name


def test_ledger_services_share_one_volume(compose: dict[str, Any]) -> None:
    services = _services(compose)
    volumes = {
        next(str(v).split(":")[0] for v in services[n]["volumes"] if ":/data" in str(v))
        for n in LEDGER_SERVICES
    }
    assert len(volumes) == 1, f"producer, scheduler and worker use different volumes: {volumes}"


def test_published_ports(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, port, bind_var in (
        ("producer", 8000, "PRODUCER_HOST"),
        ("scheduler", 8001, "SCHEDULER_HOST"),
        ("flower", 5555, "FLOWER_ADDRESS"),
    ):
        published = [_with_defaults(str(p)) for p in services[name].get("ports", [])]
        assert f"{port}:{port}" in published, f"{name} must publish {port}: {published}"
        # The services bind 127.0.0.1 by default, unreachable through a published port.
        bind = _environment(services[name]).get(bind_var)
        assert bind == "0.0.0.0", f"{name}: {bind_var} must be 0.0.0.0 in compose, not {bind!r}"


def test_no_service_uses_guest_account(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        for key, raw in _environment(service).items():
            assert "guest" not in raw.lower(), f"{name}.{key} mentions guest: {raw!r}"
            value = _with_defaults(raw)
            if key == "AMQP_URL":
                parts = urlsplit(value)
                assert parts.username and parts.username != "guest", f"{name}: {value}"
                assert parts.password and parts.password != "guest", f"{name}: {value}"
    rabbit_env = _environment(services["rabbitmq"])
    # Without these RabbitMQ creates guest/guest.
    for key in ("RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"):
        assert key in rabbit_env, f"rabbitmq must set {key}"
        assert "${" + key in rabbit_env[key], f"rabbitmq {key} must come from .env"
        assert _with_defaults(rabbit_env[key]) not in ("", "guest"), key
    for name in APP_SERVICES:
        url = _environment(services[name]).get("AMQP_URL", "")
        assert "${RABBITMQ_DEFAULT_USER" in url and "${RABBITMQ_DEFAULT_PASS" in url, (
            f"{name}: AMQP_URL must be built from the RabbitMQ credentials"
        )


# ------------------------------------------------------- (c) commands are our scripts


def test_procfile_commands_are_console_scripts() -> None:
    scripts = _console_scripts()
    procfile = _procfile()
    assert set(PROCFILE_PROCESSES) <= set(procfile), f"Procfile lacks processes: {procfile}"
    for name, command in procfile.items():
        word = _first_word(command)
        assert word in scripts, f"Procfile {name}: {word!r} is not in [project.scripts]"


def test_compose_commands_are_console_scripts(compose: dict[str, Any]) -> None:
    scripts = _console_scripts()
    services = _services(compose)
    for name in APP_SERVICES:
        word = _first_word(services[name]["command"])
        assert word in scripts, f"compose {name}: {word!r} is not in [project.scripts]"


@pytest.mark.parametrize("script", sorted(_console_scripts()))
def test_console_script_target_resolves(script: str) -> None:
    target = _console_scripts()[script]
    module_name, sep, attr_path = target.partition(":")
    assert sep and module_name and attr_path, f"{script}: target {target!r} is not module:attr"
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module *file* (or its package) is tolerated; a missing dependency
        # imported by an existing module is a real failure.
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            pytest.skip(f"{script}: module {module_name} does not exist yet")
        raise
    for part in attr_path.split("."):
        assert hasattr(obj, part), f"{script}: {target} has no attribute {part!r}"
        obj = getattr(obj, part)
    assert callable(obj), f"{script}: {target} is not callable"


# ------------------------------------------------------------------------ .env.example


def test_env_example_documents_every_variable() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    keys = [line.partition("=")[0] for line in lines if re.match(r"^[A-Z_][A-Z0-9_]*=", line)]
    missing = [var for var in ENV_VARS if var not in keys]
    assert not missing, f".env.example lacks: {missing}"
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z_][A-Z0-9_]*=", line):
            assert i > 0 and lines[i - 1].startswith("#"), f"no comment above {line!r}"
    values = _env_example()
    assert values["RABBITMQ_DEFAULT_USER"] not in ("", "guest")
    assert values["RABBITMQ_DEFAULT_PASS"] not in ("", "guest")
    assert "guest" not in values["AMQP_URL"]
