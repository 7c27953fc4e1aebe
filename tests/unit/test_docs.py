"""Every setting a service reads is documented in the README and in .env.example."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from producer.settings import ProducerSettings
from scheduler.dispatcher.settings import SchedulerSettings
from scheduler.elasticity.settings import ElasticitySettings
from scheduler.flower.settings import FlowerSettings
from scheduler.worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: list[type[BaseSettings]] = [
    ProducerSettings,
    SchedulerSettings,
    WorkerSettings,
    FlowerSettings,
    ElasticitySettings,
]
NAMES = sorted({f.upper() for cls in SETTINGS for f in cls.model_fields})


@pytest.mark.parametrize("name", NAMES)
def test_setting_is_in_the_readme_table(name: str) -> None:
    assert f"| `{name}` |" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_setting_has_a_description(name: str) -> None:
    for cls in SETTINGS:
        field = cls.model_fields.get(name.lower())
        if field is not None:
            assert field.description, f"{cls.__name__}.{name.lower()} has no description"


@pytest.mark.parametrize("name", NAMES)
def test_setting_is_in_env_example(name: str) -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    assert any(line.startswith(f"{name}=") for line in lines)
