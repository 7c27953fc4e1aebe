"""deploy/kubernetes/dispatcher-deployment.yaml: the dispatcher as shards, set by
settings that exist, with enough partitions for its replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scheduler.dispatcher.settings import DispatcherSettings

MANIFEST = Path(__file__).parents[2] / "deploy" / "kubernetes" / "dispatcher-deployment.yaml"


def _spec() -> tuple[dict[str, Any], dict[str, str]]:
    deployment = yaml.safe_load(MANIFEST.read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    return deployment, env


def test_every_setting_it_names_is_a_dispatcher_setting() -> None:
    _, env = _spec()
    known = {name.upper() for name in DispatcherSettings.model_fields}
    assert {name for name in env if name != "POD_IP"} <= known


def test_its_replicas_are_shards_with_enough_partitions_each() -> None:
    deployment, env = _spec()
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2 and int(env["DISPATCHER_PARTITIONS"]) >= 4 * replicas
    settings = DispatcherSettings(
        dispatcher_partitions=int(env["DISPATCHER_PARTITIONS"]),
        dispatcher_host=env["DISPATCHER_HOST"],
    )
    assert settings.dispatcher_partitions == 16
    assert env["DISPATCHER_ADVERTISE_URL"].endswith(f":{env['DISPATCHER_PORT']}")
