"""Deployment files: docker-compose.yml, Procfile and .env.example agree with each other
and with the console scripts declared in pyproject.toml; compose publishes its ports on
``CAROUSEL_BIND_ADDRESS`` (127.0.0.1 by default) and refuses to start with unset or
placeholder secrets (``${VAR:?}`` interpolation, then the ``preflight`` service running
:mod:`shared.preflight`).

``docker-compose`` (Debian package ``docker-compose``) and PyYAML are optional locally:
the tests that need them skip with a reason, but fail when ``CI=true``.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import string
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from harness import env_example, settings_doc
from shared import preflight

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROCFILE = ROOT / "Procfile"
ENV_EXAMPLE = ROOT / ".env.example"
PYPROJECT = ROOT / "pyproject.toml"

APP_SERVICES = ("producer", "dispatcher", "worker", "elasticity", "flower")
#: `make up` runs these; its workers are spawned by the elasticity worker (minimum 1)
PROCFILE_PROCESSES = ("simcloud", "producer", "dispatcher", "elasticity", "flower")
ALL_SERVICES = ("preflight", "rabbitmq", "postgres", "simcloud", *APP_SERVICES)
#: The services that wait for the one-shot check directly; the others wait for them.
FIRST_SERVICES = ("rabbitmq", "postgres", "simcloud")
LEDGER_SERVICES = ("producer", "dispatcher", "worker", "elasticity")
#: Who waits for whose healthcheck: the start order.
START_ORDER: dict[str, set[str]] = {
    "producer": {"rabbitmq", "postgres", "simcloud"},
    "dispatcher": {"producer"},
    "worker": {"producer"},
    "elasticity": {"producer"},
    "flower": {"worker"},
}
BROKER_PORTS = ROOT / "deploy" / "compose" / "broker-ports.yml"

#: Every variable the services (and compose) read; each must be documented in .env.example.
ENV_VARS = (
    "AMQP_URL",
    "CAROUSEL_PREFIX",
    "CAROUSEL_DB_URL",
    "LOG_LEVEL",
    "CAROUSEL_API_TOKEN",
    "PRODUCER_PORT",
    "DISPATCHER_PORT",
    "DISPATCHER_PARTITIONS",
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
    "CAROUSEL_BIND_ADDRESS",
    "RABBITMQ_PORT",
    "RABBITMQ_MANAGEMENT_PORT",
    "ELASTICITY_PORT",
    "POSTGRES_PASSWORD",
    "SIMCLOUD_TOKEN",
)

#: Compose refuses to start without real values for these.
SECRETS = (
    "RABBITMQ_DEFAULT_PASS",
    "POSTGRES_PASSWORD",
    "FLOWER_BASIC_AUTH",
    "CAROUSEL_API_TOKEN",
    "SIMCLOUD_TOKEN",
)
#: Values that pass every check, standing in for a user's edited .env.
GOOD_SECRETS: dict[str, str] = {
    "RABBITMQ_DEFAULT_USER": "ci-user",
    "RABBITMQ_DEFAULT_PASS": "ci-s3cret-Pw",
    "POSTGRES_PASSWORD": "ci-pg-Pw-7c1",
    "FLOWER_BASIC_AUTH": "ops:fl0wer-Pw",
    "CAROUSEL_API_TOKEN": "ci-token-4f9a2c",
    "SIMCLOUD_TOKEN": "ci-cloud-token-8e3b",
}
#: Host port each service publishes, by container port, and the variable choosing it.
#: The broker's only with deploy/compose/broker-ports.yml (BROKER_PUBLISHED).
BROKER_PUBLISHED = {5672: ("RABBITMQ_PORT", 5672), 15672: ("RABBITMQ_MANAGEMENT_PORT", 15672)}
PUBLISHED: dict[str, dict[int, tuple[str, int]]] = {
    "producer": {8000: ("PRODUCER_PORT", 8000)},
    "dispatcher": {8001: ("DISPATCHER_PORT", 8001)},
    "elasticity": {8002: ("ELASTICITY_PORT", 8002)},
    "flower": {5555: ("FLOWER_PORT", 5555)},
    "simcloud": {8100: ("SIMCLOUD_PORT", 8100)},
}

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


_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<sep>:?[-?])(?P<arg>[^}]*))?\}"
)


class _Refused(Exception):
    """What compose does with ``${VAR:?message}`` when VAR is unset or empty."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    """Resolve ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` as compose does."""

    def one(match: re.Match[str]) -> str:
        name, sep, arg = match.group("name"), match.group("sep"), match.group("arg") or ""
        value = env.get(name)
        if sep == ":-":
            return value or arg
        if sep == "-":
            return arg if value is None else value
        if sep == ":?" and not value:
            raise _Refused(name, arg or name)
        if sep == "?" and value is None:
            raise _Refused(name, arg or name)
        return value or ""

    return _INTERPOLATION.sub(one, value)


def _with_defaults(value: str) -> str:
    """Resolve ``value`` as compose does with a .env that sets the secrets and nothing else."""
    return _interpolate(value, GOOD_SECRETS)


def _compose_variables() -> set[str]:
    """Every variable docker-compose.yml interpolates."""
    return {m.group("name") for m in _INTERPOLATION.finditer(COMPOSE_FILE.read_text())}


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


def _run_compose_config(env_file: Path, *extra: Path) -> subprocess.CompletedProcess[str]:
    # Shell variables override .env in compose: keep them out so only env_file counts.
    ignored = set(ENV_VARS) | _compose_variables()
    env = {k: v for k, v in os.environ.items() if k not in ignored}
    files = [arg for f in (COMPOSE_FILE, *extra) for arg in ("-f", str(f))]
    return subprocess.run(
        [_docker_compose(), "--env-file", str(env_file), *files, "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _compose_config(env_file: Path, *extra: Path) -> str:
    proc = _run_compose_config(env_file, *extra)
    assert proc.returncode == 0, (
        f"docker-compose config failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
    )
    assert "services:" in proc.stdout
    return proc.stdout


def _refused_by_compose_config(env_file: Path) -> str:
    """Run ``docker-compose config``, expect it to refuse, return what it said."""
    proc = _run_compose_config(env_file)
    said = proc.stderr + proc.stdout
    assert proc.returncode != 0, f"docker-compose config accepted {env_file.read_text()!r}"
    return said


def _write_env(path: Path, values: Mapping[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def _resolved_services(out: str) -> dict[str, Any]:
    resolved = _yaml().safe_load(out)
    assert isinstance(resolved, dict)
    return _services(resolved)


def _host_port(published: object) -> int | str:
    """A published host port as a number, or a range (``8011-8012``) as it is."""
    text = str(published)
    return int(text) if text.isdigit() else text


def _resolved_ports(service: dict[str, Any]) -> set[tuple[str, int | str, int]]:
    """(host address, host port or range, container port) of each published port, in the
    short (docker-compose 1.29) or long (compose v2) form ``config`` prints."""
    ports: set[tuple[str, int | str, int]] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = _host_port(entry["published"])
            ports.add((str(entry["host_ip"]), published, int(entry["target"])))
            continue
        host_ip, published_text, target = str(entry).split("/")[0].rsplit(":", 2)
        ports.add((host_ip, _host_port(published_text), int(target)))
    return ports


def _expected_ports(
    service: str, address: str, overrides: Mapping[str, str] | None = None
) -> set[tuple[str, int | str, int]]:
    chosen = overrides or {}
    return {
        (address, int(chosen.get(var, default)), target)
        for target, (var, default) in PUBLISHED[service].items()
    }


def test_compose_config_resolves_with_env_file(tmp_path: Path) -> None:
    env_file = _write_env(tmp_path / "compose.env", {**_env_example(), **GOOD_SECRETS})

    out = _compose_config(env_file)

    expected_url = "amqp://ci-user:ci-s3cret-Pw@rabbitmq:5672//"
    assert expected_url in out, "AMQP_URL is not interpolated from the RabbitMQ credentials"
    assert "guest" not in out.lower()
    services = _resolved_services(out)
    assert set(ALL_SERVICES) <= set(services)
    for name in APP_SERVICES:
        env = _environment(services[name])
        assert env["AMQP_URL"] == expected_url, name
        assert env["CAROUSEL_API_TOKEN"] == GOOD_SECRETS["CAROUSEL_API_TOKEN"], name
        assert env["SIMCLOUD_TOKEN"] == GOOD_SECRETS["SIMCLOUD_TOKEN"], name
    assert _environment(services["simcloud"])["SIMCLOUD_TOKEN"] == GOOD_SECRETS["SIMCLOUD_TOKEN"]
    rabbit_env = _environment(services["rabbitmq"])
    assert rabbit_env["RABBITMQ_DEFAULT_USER"] == "ci-user"
    assert rabbit_env["RABBITMQ_DEFAULT_PASS"] == "ci-s3cret-Pw"
    assert _environment(services["flower"])["FLOWER_BASIC_AUTH"] == "ops:fl0wer-Pw"
    # The preflight gets exactly what the services get, and passes it.
    checked = _environment(services["preflight"])
    assert checked == {k: GOOD_SECRETS[k] for k in preflight.REQUIRED}
    assert preflight.check(checked) == []


def test_compose_config_binds_every_port_to_localhost_by_default(tmp_path: Path) -> None:
    env_file = _write_env(tmp_path / "compose.env", GOOD_SECRETS)

    services = _resolved_services(_compose_config(env_file))

    for name in PUBLISHED:
        assert _resolved_ports(services[name]) == _expected_ports(name, "127.0.0.1"), name
    unpublished = set(services) - set(PUBLISHED)
    assert unpublished == {"preflight", "worker", "rabbitmq", "postgres"}
    for name in unpublished:
        assert not services[name].get("ports"), name


def test_compose_config_one_setting_opens_the_ports(tmp_path: Path) -> None:
    env_file = _write_env(
        tmp_path / "compose.env", {**GOOD_SECRETS, "CAROUSEL_BIND_ADDRESS": "0.0.0.0"}
    )

    services = _resolved_services(_compose_config(env_file))

    for name in PUBLISHED:
        assert _resolved_ports(services[name]) == _expected_ports(name, "0.0.0.0")
    assert not services["rabbitmq"].get("ports")


def test_compose_config_gives_shards_a_port_range(tmp_path: Path) -> None:
    """`DISPATCHER_PARTITIONS=16 DISPATCHER_PORT=8011-8012 docker compose up --scale
    dispatcher=2`: the range is published as it is (Docker gives each replica a free port
    of it), and every service gets the partitions; unset, they reach it empty (the
    setting's default, 0: one dispatcher, the others standbys) and the port is one."""
    shards = {**GOOD_SECRETS, "DISPATCHER_PORT": "8011-8012", "DISPATCHER_PARTITIONS": "16"}

    services = _resolved_services(_compose_config(_write_env(tmp_path / "shards.env", shards)))

    assert _resolved_ports(services["dispatcher"]) == {("127.0.0.1", "8011-8012", 8001)}
    for name in APP_SERVICES:
        assert _environment(services[name])["DISPATCHER_PARTITIONS"] == "16", name
    one = _resolved_services(_compose_config(_write_env(tmp_path / "one.env", GOOD_SECRETS)))
    assert _resolved_ports(one["dispatcher"]) == {("127.0.0.1", 8001, 8001)}
    assert _environment(one["dispatcher"]).get("DISPATCHER_PARTITIONS", "") == ""


@pytest.mark.parametrize(
    ("settings", "address", "chosen"),
    [
        ({}, "127.0.0.1", {}),
        (
            {"CAROUSEL_BIND_ADDRESS": "0.0.0.0", "RABBITMQ_PORT": "5673"},
            "0.0.0.0",
            {"RABBITMQ_PORT": "5673"},
        ),
    ],
)
def test_the_broker_ports_are_published_only_when_asked(
    tmp_path: Path, settings: dict[str, str], address: str, chosen: dict[str, str]
) -> None:
    """deploy/compose/broker-ports.yml publishes AMQP and the management UI, on the same
    address as everything else, at RABBITMQ_PORT / RABBITMQ_MANAGEMENT_PORT."""
    env_file = _write_env(tmp_path / "compose.env", {**GOOD_SECRETS, **settings})

    services = _resolved_services(_compose_config(env_file, BROKER_PORTS))

    expected = {
        (address, int(chosen.get(var, default)), target)
        for target, (var, default) in BROKER_PUBLISHED.items()
    }
    assert _resolved_ports(services["rabbitmq"]) == expected
    assert _resolved_ports(services["producer"]) == _expected_ports("producer", address)


def test_compose_config_refuses_an_unedited_env_example(tmp_path: Path) -> None:
    """``cp .env.example .env && docker compose up`` stops before building anything."""
    env_file = tmp_path / "compose.env"
    env_file.write_text(ENV_EXAMPLE.read_text())

    said = _refused_by_compose_config(env_file)

    assert re.search(r"set (RABBITMQ_DEFAULT_PASS|CAROUSEL_API_TOKEN) in \.env", said), said


def test_compose_config_refuses_without_dot_env(tmp_path: Path) -> None:
    said = _refused_by_compose_config(_write_env(tmp_path / "empty.env", {}))

    assert re.search(r"set [A-Z_]+ in \.env", said), said


@pytest.mark.parametrize("missing", SECRETS)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_compose_config_refuses_a_missing_secret(tmp_path: Path, missing: str, how: str) -> None:
    values = {k: v for k, v in GOOD_SECRETS.items() if k != missing}
    if how == "empty":
        values[missing] = ""

    said = _refused_by_compose_config(_write_env(tmp_path / "compose.env", values))

    assert f"set {missing} in .env" in said, said


@pytest.mark.parametrize(
    ("variable", "placeholder"),
    [
        ("RABBITMQ_DEFAULT_PASS", "change-me"),
        ("RABBITMQ_DEFAULT_PASS", "guest"),
        ("FLOWER_BASIC_AUTH", "admin:change-me"),
        ("FLOWER_BASIC_AUTH", "admin:carousel"),
        ("CAROUSEL_API_TOKEN", "changeme"),
        ("CAROUSEL_API_TOKEN", "password"),
        ("SIMCLOUD_TOKEN", "change-me"),
    ],
)
def test_placeholders_get_past_interpolation_but_the_preflight_refuses_them(
    tmp_path: Path, variable: str, placeholder: str
) -> None:
    """Interpolation cannot see a placeholder; the preflight service, which every other
    service waits for, is handed the resolved value and refuses it."""
    env_file = _write_env(tmp_path / "compose.env", {**GOOD_SECRETS, variable: placeholder})

    services = _resolved_services(_compose_config(env_file))

    checked = _environment(services["preflight"])
    assert checked[variable] == placeholder
    problems = preflight.check(checked)
    assert [p.variable for p in problems] == [variable]


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
    # the listeners accept connections: `ping` answers before they do
    assert "rabbitmq-diagnostics" in text and "check_port_connectivity" in text
    assert any(str(v).split(":")[-1] == "/var/lib/rabbitmq" for v in rabbit.get("volumes", [])), (
        "rabbitmq needs a durable volume on /var/lib/rabbitmq"
    )
    assert not rabbit.get("ports"), "the broker publishes nothing unless asked"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_start_in_order(compose: dict[str, Any], name: str) -> None:
    service = _services(compose)[name]
    depends = service.get("depends_on")
    assert isinstance(depends, dict), f"{name}: depends_on must be the long (condition) form"
    assert {dep: cond.get("condition") for dep, cond in depends.items()} == {
        dep: "service_healthy" for dep in START_ORDER[name]
    }, name
    assert service.get("command"), f"{name} needs an explicit command"
    assert service.get("restart") == "unless-stopped", name


def test_the_image_is_built_once(compose: dict[str, Any]) -> None:
    services = _services(compose)
    built = [name for name, s in services.items() if s.get("build")]
    assert built == ["preflight"], f"only the first service builds the image: {built}"
    for name in ("simcloud", *APP_SERVICES):
        assert services[name].get("image") == services["preflight"]["image"], name


@pytest.mark.parametrize(
    ("name", "probe"),
    [
        ("producer", "http://localhost:8000/readyz"),
        ("dispatcher", "http://localhost:8001/readyz"),
        ("elasticity", "http://localhost:8002/readyz"),
        ("simcloud", "http://localhost:8100/healthz"),
        ("flower", "http://localhost:5555/healthcheck"),
        ("worker", "scheduler.worker.ping"),
        ("rabbitmq", "check_port_connectivity"),
        ("postgres", "pg_isready"),
    ],
)
def test_every_service_has_a_readiness_healthcheck(
    compose: dict[str, Any], name: str, probe: str
) -> None:
    """Ready, not merely alive: the producer's /readyz fails while the broker refuses its
    login, where /healthz would pass (and let everything after it start)."""
    test = _services(compose)[name].get("healthcheck", {}).get("test")
    assert test, f"{name} needs a healthcheck"
    assert probe in " ".join(map(str, test)), test
    if probe.startswith("http"):
        assert test[:4] == ["CMD", "python", "-m", "shared.healthcheck"], test


def test_the_ledger_is_postgresql(compose: dict[str, Any]) -> None:
    services = _services(compose)
    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:")
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres.get("volumes", [])), (
        "postgres needs a durable volume"
    )
    env = _environment(postgres)
    url = "postgresql+psycopg://carousel:ci-pg-Pw-7c1@postgres:5432/carousel"
    assert _with_defaults(env["POSTGRES_PASSWORD"]) == GOOD_SECRETS["POSTGRES_PASSWORD"]
    for name in LEDGER_SERVICES:
        assert _with_defaults(_environment(services[name])["CAROUSEL_DB_URL"]) == url, name


def test_nothing_mounts_an_unnamed_volume(compose: dict[str, Any]) -> None:
    """``down -v`` removes the named volumes; an anonymous one (a Dockerfile VOLUME no
    service mounts) would stay behind."""
    named = set(compose.get("volumes") or {})
    for name, service in _services(compose).items():
        for volume in service.get("volumes", []):
            assert str(volume).split(":")[0] in named, f"{name}: {volume}"
    assert not re.search(r"^VOLUME", (ROOT / "Dockerfile").read_text(), re.M)


def test_published_ports(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, port, bind_var in (
        ("producer", 8000, "PRODUCER_HOST"),
        ("dispatcher", 8001, "DISPATCHER_HOST"),
        ("elasticity", 8002, "ELASTICITY_HOST"),
        ("flower", 5555, "FLOWER_ADDRESS"),
    ):
        published = [_with_defaults(str(p)) for p in services[name].get("ports", [])]
        assert published == [f"127.0.0.1:{port}:{port}"], f"{name} must publish {port}"
        # The services bind 127.0.0.1 by default, unreachable through a published port.
        bind = _environment(services[name]).get(bind_var)
        assert bind == "0.0.0.0", f"{name}: {bind_var} must be 0.0.0.0 in compose, not {bind!r}"


def test_every_published_port_binds_the_configurable_address(compose: dict[str, Any]) -> None:
    """One setting, CAROUSEL_BIND_ADDRESS (default 127.0.0.1), decides who can reach every
    published port; each host port is a setting, the broker's included."""
    services = _services(compose)
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == set(PUBLISHED), "unexpected services publish ports"
    for name, ports in published.items():
        for raw in ports:
            assert isinstance(raw, str), f"{name}: use the short port syntax: {raw!r}"
            assert raw.startswith("${CAROUSEL_BIND_ADDRESS:-127.0.0.1}:"), (
                f"{name}: {raw!r} must bind ${{CAROUSEL_BIND_ADDRESS:-127.0.0.1}}"
            )
            assert _with_defaults(raw).count(":") == 2, f"{name}: {raw!r} is not ADDR:HOST:PORT"
        for env, address, chosen in (
            ({}, "127.0.0.1", {}),
            ({"CAROUSEL_BIND_ADDRESS": ""}, "127.0.0.1", {}),
            ({"CAROUSEL_BIND_ADDRESS": "0.0.0.0"}, "0.0.0.0", {}),
            ({"CAROUSEL_BIND_ADDRESS": "10.1.2.3"}, "10.1.2.3", {}),
            (
                {"RABBITMQ_PORT": "5673", "RABBITMQ_MANAGEMENT_PORT": "15673"},
                "127.0.0.1",
                {"RABBITMQ_PORT": "5673", "RABBITMQ_MANAGEMENT_PORT": "15673"},
            ),
            (
                {v: "9999" for v, _ in PUBLISHED[name].values()},
                "127.0.0.1",
                {v: "9999" for v, _ in PUBLISHED[name].values()},
            ),
        ):
            resolved = {
                (ip, int(host), int(target))
                for ip, host, target in (
                    _interpolate(str(raw), env).rsplit(":", 2) for raw in ports
                )
            }
            assert resolved == _expected_ports(name, address, chosen), (name, env)


def test_preflight_service_runs_the_check_first(compose: dict[str, Any]) -> None:
    services = _services(compose)
    check = services["preflight"]
    assert check.get("build"), "preflight builds the image the others run"
    assert check.get("image") == services["producer"].get("image")
    command = check.get("command")
    assert command == ["python", "-m", preflight.__name__], command
    assert hasattr(preflight, "main")
    # A one-shot: restarting it would loop (and never let the others start).
    assert str(check.get("restart", "no")) == "no"
    assert "depends_on" not in check and not check.get("ports")
    for name in FIRST_SERVICES:
        depends = services[name].get("depends_on")
        assert depends == {"preflight": {"condition": "service_completed_successfully"}}, (
            f"{name} must wait for the preflight to succeed"
        )

    def waits_for_preflight(name: str) -> bool:
        depends = services[name].get("depends_on") or {}
        return "preflight" in depends or any(waits_for_preflight(d) for d in depends)

    late = [name for name in services if name != "preflight" and not waits_for_preflight(name)]
    assert not late, f"these start without waiting for the preflight: {late}"


def test_preflight_checks_the_values_the_services_get(compose: dict[str, Any]) -> None:
    """Its environment is interpolated exactly as the services' own, so it cannot pass a
    value the services would not get."""
    services = _services(compose)
    checked = _environment(services["preflight"])
    assert set(checked) == set(preflight.REQUIRED)
    rabbit = _environment(services["rabbitmq"])
    for key in ("RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"):
        assert checked[key] == rabbit[key], key
    pg_password = checked["POSTGRES_PASSWORD"]
    assert _environment(services["postgres"])["POSTGRES_PASSWORD"] == pg_password
    for name in LEDGER_SERVICES:
        assert (
            f"carousel:{pg_password}@postgres:5432"
            in _environment(services[name])["CAROUSEL_DB_URL"]
        ), name
    for name in APP_SERVICES:
        env = _environment(services[name])
        assert env["CAROUSEL_API_TOKEN"] == checked["CAROUSEL_API_TOKEN"], name
        # the producer's fetcher and the workers' driver send the token simcloud requires
        assert env["SIMCLOUD_TOKEN"] == checked["SIMCLOUD_TOKEN"], name
        user, password = checked["RABBITMQ_DEFAULT_USER"], checked["RABBITMQ_DEFAULT_PASS"]
        assert env["AMQP_URL"] == f"amqp://{user}:{password}@rabbitmq:5672//", name
    assert _environment(services["flower"])["FLOWER_BASIC_AUTH"] == checked["FLOWER_BASIC_AUTH"]
    # simcloud listens on every interface of the compose network: never without its token
    cloud = _environment(services["simcloud"])
    assert cloud["SIMCLOUD_HOST"] == "0.0.0.0"
    assert cloud["SIMCLOUD_TOKEN"] == checked["SIMCLOUD_TOKEN"]


def test_secrets_are_required_wherever_they_are_interpolated() -> None:
    """``${VAR:?message}`` everywhere: no default to fall back on, and the message says
    what to do."""
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = [m for m in _INTERPOLATION.finditer(text) if m.group("name") == name]
        assert uses, f"docker-compose.yml does not use {name}"
        for use in uses:
            assert use.group("sep") == ":?", f"{use.group(0)} must be ${{{name}:?...}}"
            assert use.group("arg") == f"set {name} in .env (see .env.example)", use.group(0)
        with pytest.raises(_Refused, match=name):
            _interpolate(uses[0].group(0), {})
        with pytest.raises(_Refused, match=name):
            _interpolate(uses[0].group(0), {name: ""})


def test_flower_password_reaches_flower_only(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        if name not in ("flower", "preflight"):
            assert "FLOWER_BASIC_AUTH" not in _environment(service), name


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


def _env_example_lines() -> dict[str, str]:
    """Every variable .env.example shows, set (``NAME=value``) or at its default
    (``# NAME=value``), with the value shown."""
    shown: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        found = re.match(r"^(?:# )?([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if found:
            shown[found.group(1)] = found.group(2)
    return shown


def test_env_example_documents_every_variable() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    missing = [var for var in ENV_VARS if var not in _env_example_lines()]
    assert not missing, f".env.example lacks: {missing}"
    for i, line in enumerate(lines):
        if re.match(r"^(# )?[A-Z_][A-Z0-9_]*=", line):
            assert i > 0 and lines[i - 1].startswith("#"), f"no comment above {line!r}"
    assert _env_example_lines()["RABBITMQ_DEFAULT_USER"] not in ("", "guest")


def _compose_fallbacks(literals: bool = True) -> dict[str, str]:
    """``NAME: ${NAME:-fallback}`` entries of docker-compose.yml, by name, and (with
    ``literals``) ``NAME: value`` ones."""
    entries: dict[str, str] = {}
    for line in COMPOSE_FILE.read_text().splitlines():
        found = re.match(r"^\s+([A-Z_][A-Z0-9_]*): (.+)$", line)
        if found:
            name, given = found.groups()
            given = given.strip().strip('"')
            fallback = re.fullmatch(r"\$\{" + name + r":-([^}]*)\}", given)
            if fallback or literals:
                entries[name] = fallback.group(1) if fallback else given
    return entries


def test_compose_repeats_no_default() -> None:
    """A setting compose passes on is passed through (``${NAME:-}``: empty means the
    default) or given a value of compose's own: never the default written again."""
    defaults = {
        name.upper(): env_example.value(info)
        for cls in settings_doc.settings_classes()
        for name, info in cls.model_fields.items()
    }
    repeated = {
        name: given
        for name, given in _compose_fallbacks().items()
        if name in defaults and given != "" and given == defaults[name]
    }
    assert not repeated, f"docker-compose.yml repeats these defaults: {repeated}"


def test_env_example_shows_the_compose_fallbacks() -> None:
    """What .env.example shows for a compose-only variable (not a setting: those are
    generated from the settings classes) is what compose falls back on."""
    fallbacks = _compose_fallbacks(literals=False)
    settings = set(settings_doc.names())
    compose_only = {n: v for n, v in _env_example_lines().items() if n not in settings}
    assert "SIMCLOUD_ACTION_SECONDS" in compose_only
    differ = {
        name: (value, fallbacks[name])
        for name, value in compose_only.items()
        if fallbacks.get(name) and value != fallbacks[name]
    }
    assert not differ, f".env.example shows other values than compose uses: {differ}"


def test_an_unedited_env_example_cannot_start() -> None:
    """Its secrets are empty or placeholders: the preflight names every one of them
    (the other variables at the values it shows, as compose falls back on them)."""
    problems = preflight.check(_env_example_lines())
    assert sorted({p.variable for p in problems}) == sorted(SECRETS)


# --------------------------------------------------------------- shared/preflight.py


def test_preflight_passes_real_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    assert preflight.check(GOOD_SECRETS) == []
    assert preflight.main(GOOD_SECRETS) == 0
    assert capsys.readouterr().out == "carousel preflight: ok\n"


@pytest.mark.parametrize(
    "placeholder",
    [
        "change-me",
        "changeme",
        "CHANGE_ME",
        "<change-me>",
        "change me",
        "change-me-please",
        "changeit",
        "guest",
        "password",
        "Password",
        "passw0rd",
        "secret",
        "admin",
        "carousel",
        "replace-me",
        "your-token-here",
        "xxx",
        "   ",
    ],
)
@pytest.mark.parametrize(
    "variable", ["RABBITMQ_DEFAULT_PASS", "CAROUSEL_API_TOKEN", "SIMCLOUD_TOKEN"]
)
def test_preflight_refuses_placeholders(variable: str, placeholder: str) -> None:
    problems = preflight.check({**GOOD_SECRETS, variable: placeholder})
    assert [p.variable for p in problems] == [variable]
    assert preflight.is_placeholder(placeholder)


@pytest.mark.parametrize("variable", preflight.REQUIRED)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_preflight_refuses_missing_values(variable: str, how: str) -> None:
    env = {k: v for k, v in GOOD_SECRETS.items() if k != variable}
    if how == "empty":
        env[variable] = ""
    problems = preflight.check(env)
    assert [p.variable for p in problems] == [variable]
    assert "not set" in problems[0].reason


@pytest.mark.parametrize(
    ("auth", "ok"),
    [
        ("ops:fl0wer-Pw", True),
        ("ops:fl0wer-Pw,viewer:an0ther-Pw", True),
        ("ops:pass:with:colons", True),
        ("admin:change-me", False),
        ("admin:carousel", False),
        ("admin:admin", False),
        ("ops:fl0wer-Pw,admin:changeme", False),
        ("ops", False),
        (":fl0wer-Pw", False),
        ("ops:", False),
        ("ops:fl0wer-Pw,", False),
    ],
)
def test_preflight_checks_every_flower_account(auth: str, ok: bool) -> None:
    problems = preflight.check({**GOOD_SECRETS, "FLOWER_BASIC_AUTH": auth})
    assert [p.variable for p in problems] == ([] if ok else ["FLOWER_BASIC_AUTH"])


@pytest.mark.parametrize("user", ["guest", "GUEST", "", "ops:team", "ops/team", "ops team"])
def test_preflight_refuses_rabbitmq_users_that_cannot_work(user: str) -> None:
    problems = preflight.check({**GOOD_SECRETS, "RABBITMQ_DEFAULT_USER": user})
    assert [p.variable for p in problems] == ["RABBITMQ_DEFAULT_USER"]


def _amqp_url_carries(user: str, password: str) -> bool:
    """Whether kombu (dispatcher, worker) and yarl (the producer's aio-pika) both read back
    ``user`` and ``password`` from the AMQP_URL compose builds from them."""
    from kombu.utils.url import url_to_parts
    from yarl import URL

    url = f"amqp://{user}:{password}@rabbitmq:5672//"
    try:
        parts, parsed = url_to_parts(url), URL(url)
    except ValueError:
        return False
    return (
        (parts.username, parts.password, parts.hostname) == (user, password, "rabbitmq")
        and (parsed.user, parsed.password, parsed.host) == (user, password, "rabbitmq")
        and parts.port == parsed.port == 5672
    )


@pytest.mark.parametrize("char", list(string.printable))
def test_preflight_refuses_exactly_the_characters_amqp_url_cannot_carry(char: str) -> None:
    # Hex digits after it, so that % meets its worst case (%4a would decode to J).
    password = f"Xq7{char}4aZr9"
    user = f"ops{char}4ateam"
    pass_refused = bool(preflight.check({**GOOD_SECRETS, "RABBITMQ_DEFAULT_PASS": password}))
    user_refused = bool(preflight.check({**GOOD_SECRETS, "RABBITMQ_DEFAULT_USER": user}))
    if char.isspace():  # carried, but .env files and shells mangle it: refused outright
        assert pass_refused and user_refused
        return
    assert pass_refused == (not _amqp_url_carries("ops", password)), repr(char)
    assert user_refused == (not _amqp_url_carries(user, "Xq7Zr9-k")), repr(char)


def test_preflight_error_is_one_line_naming_each_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "my/real-secret"
    env = {
        **GOOD_SECRETS,
        "RABBITMQ_DEFAULT_PASS": secret,
        "FLOWER_BASIC_AUTH": "admin:change-me",
        "CAROUSEL_API_TOKEN": "",
    }

    assert preflight.main(env) == 1

    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1, out.err
    line = lines[0]
    assert line.startswith("carousel preflight: refusing to start: set ")
    assert "set RABBITMQ_DEFAULT_PASS, FLOWER_BASIC_AUTH, CAROUSEL_API_TOKEN in .env" in line
    assert secret not in line and "change-me" not in line, "the error must not echo values"


def test_preflight_runs_as_the_compose_command() -> None:
    """What the container runs: ``python -m shared.preflight`` with compose's environment."""
    base = {k: v for k, v in os.environ.items() if k not in preflight.REQUIRED}

    def run(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", preflight.__name__],
            cwd=ROOT,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    good = run(GOOD_SECRETS)
    assert (good.returncode, good.stdout, good.stderr) == (0, "carousel preflight: ok\n", "")
    bad = run({**GOOD_SECRETS, "CAROUSEL_API_TOKEN": "change-me"})
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "set CAROUSEL_API_TOKEN in .env" in bad.stderr


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``${NAME:-}`` passes on for an unset variable: every settings class (a
    driver's too) and simcloud read an empty one as unset."""
    from scheduler.worker.webhook_driver import WebhookConfig
    from shared.settings import LimitSettings
    from simcloud.__main__ import parser

    for name in ("MAX_PARALLEL", "LOG_LEVEL", "DRIVER_HTTP_TIMEOUT", "SIMCLOUD_HOSTS"):
        monkeypatch.setenv(name, "")
    limits = LimitSettings()
    assert (limits.max_parallel, limits.log_level) == (10, "INFO")
    assert WebhookConfig().driver_http_timeout == 30
    assert parser().parse_args([]).hosts == 3


def test_a_renamed_variable_stops_a_service_naming_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    from shared.settings import LimitSettings, explain_settings

    monkeypatch.setenv("SCHEDULER_PORT", "9001")
    with pytest.raises(ValidationError) as caught:
        LimitSettings()
    assert (
        explain_settings(caught.value) == "SCHEDULER_PORT is now called DISPATCHER_PORT: rename it"
    )
