"""The documents agree with the code: every setting a service reads (its built-in drivers'
own included) is in the generated tables of docs/settings.md (current) and in
.env.example; the paths, tests and entry points the README and the design name exist;
docs/extending.md shows the code that runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from bench import docs as bench_docs
from harness import env_example, settings_doc
from harness.faults import docs as fault_docs

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: list[type[BaseSettings]] = settings_doc.settings_classes()
NAMES = settings_doc.names()


def test_the_settings_tables_are_generated_from_the_current_code() -> None:
    assert settings_doc.current() == settings_doc.render(), (
        "docs/settings.md is stale: run `make docs`"
    )


def test_the_benchmark_figures_are_generated_from_the_results() -> None:
    assert bench_docs.current() == bench_docs.render(), (
        "docs/benchmarks.md differs from bench/results/: run `make docs`"
    )


def test_the_fault_table_is_generated_from_the_recorded_runs() -> None:
    assert fault_docs.current() == fault_docs.render(), (
        "docs/reliability.md differs from bench/results/faults-*.json: run `make docs`"
    )


@pytest.mark.parametrize("name", NAMES)
def test_setting_is_in_the_settings_tables(name: str) -> None:
    assert f"| `{name}` |" in settings_doc.current()


@pytest.mark.parametrize("name", NAMES)
def test_setting_has_a_description(name: str) -> None:
    for cls in SETTINGS:
        field = cls.model_fields.get(name.lower())
        if field is not None:
            assert field.description, f"{cls.__name__}.{name.lower()} has no description"


def test_the_env_example_is_generated_from_the_current_code() -> None:
    assert env_example.current() == env_example.render(), ".env.example is stale: run `make docs`"


@pytest.mark.parametrize("name", NAMES)
def test_setting_is_in_env_example(name: str) -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    assert any(line.startswith((f"{name}=", f"# {name}=")) for line in lines)


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


DOCS = ["README.md", *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("*.md")))]


def test_every_path_the_documents_name_exists() -> None:
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for path in re.findall(
            r"`((?:producer|scheduler|shared|harness|bench|docs)/[\w./]+)`", text
        ):
            assert (ROOT / path).exists(), f"{doc} names {path}, which does not exist"


def test_nothing_points_outside_the_repository() -> None:
    for doc in DOCS:
        text = (ROOT / doc).read_text().replace("](../README.md)", "")
        assert "../" not in text, doc


def test_every_document_the_readme_links_exists() -> None:
    for target in re.findall(r"\]\((docs/[\w.-]+\.md)", (ROOT / "README.md").read_text()):
        assert (ROOT / target).exists(), target


def test_the_readme_names_each_entry_point_and_its_module() -> None:
    """The package layout, the console scripts and the README's table agree."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
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
