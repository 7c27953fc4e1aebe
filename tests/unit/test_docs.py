"""Every setting a service reads — its built-in drivers' own included — is documented in
the README and in .env.example."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from producer.settings import ProducerSettings
from scheduler.dispatcher.settings import SchedulerSettings
from scheduler.elasticity.settings import ElasticitySettings
from scheduler.flower.settings import FlowerSettings
from scheduler.worker.drivers import GROUP as DRIVERS
from scheduler.worker.drivers import driver_class
from scheduler.worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: the drivers Carousel itself registers (an installed plug-in documents its own)
BUILT_IN_DRIVERS = sorted(PYPROJECT["project"]["entry-points"][DRIVERS])
SETTINGS: list[type[BaseSettings]] = [
    ProducerSettings,
    SchedulerSettings,
    WorkerSettings,
    FlowerSettings,
    ElasticitySettings,
    *(driver_class(name).config_model for name in BUILT_IN_DRIVERS),
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


def _tests_named_in(text: str) -> set[tuple[str, str]]:
    """(file, test) pairs cited as ``file.py::test_name``, the file carried over to the
    ``::test_other`` citations that follow it."""
    cited: set[tuple[str, str]] = set()
    current = ""
    for match in re.finditer(r"`(?:(test_\w+\.py))?::(test_\w+)`|`(test_\w+\.py)", text):
        if match.group(3):
            current = match.group(3)
            continue
        current = match.group(1) or current
        cited.add((current, match.group(2)))
    return cited


def test_every_test_the_design_cites_exists() -> None:
    text = (ROOT / "docs" / "design.md").read_text()
    cited = _tests_named_in(text)
    assert len(cited) >= 15
    for filename, name in sorted(cited):
        paths = list((ROOT / "tests").rglob(filename))
        assert paths, f"docs/design.md cites {filename}, which does not exist"
        assert re.search(rf"^def {name}\(", paths[0].read_text(), re.M), (
            f"docs/design.md cites {filename}::{name}, which does not exist"
        )


def test_every_path_the_readme_and_design_name_exists() -> None:
    for doc in ("README.md", "docs/design.md", "docs/extending.md"):
        text = (ROOT / doc).read_text()
        for path in re.findall(
            r"`((?:producer|scheduler|shared|harness|bench|docs)/[\w./]+)`", text
        ):
            assert (ROOT / path).exists(), f"{doc} names {path}, which does not exist"


def test_nothing_points_outside_the_repository() -> None:
    for doc in ("README.md", "docs/design.md", "docs/extending.md"):
        assert "../" not in (ROOT / doc).read_text(), doc


def test_the_readme_names_each_entry_point_and_its_module() -> None:
    """The package layout, the console scripts and the README's table agree."""
    scripts = PYPROJECT["project"]["scripts"]
    readme = (ROOT / "README.md").read_text()
    assert len(scripts) == 7
    for script, target in scripts.items():
        module = target.split(":")[0]
        path = module.replace(".", "/") + ".py"
        assert (ROOT / path).exists(), path
        assert f"`{script}` (`{path}`)" in readme, f"README does not list {script} -> {path}"


def test_the_code_docs_extending_shows_is_the_code() -> None:
    """Every Python block of docs/extending.md is verbatim in the module it walks through
    (the webhook driver, the example plug-in), and every entry-point line of a block is
    registered: the guide cannot drift from what runs."""
    text = (ROOT / "docs" / "extending.md").read_text()
    sources = [
        (ROOT / "scheduler" / "worker" / "webhook_driver.py").read_text(),
        (ROOT / "tests" / "plugins" / "carousel_echo" / "carousel_echo.py").read_text(),
    ]
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    for block in blocks:
        assert any(block in source for source in sources), block[:200]
    registered = (ROOT / "pyproject.toml").read_text() + (
        ROOT / "tests" / "plugins" / "carousel_echo" / "pyproject.toml"
    ).read_text()
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        for line in block.splitlines():
            assert line in registered, line
