# One command runner: CI calls the same targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: venv up test unit lint fmt docs bench faults compose-test clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# the demo: simcloud, and the producer watching it (MONITOR_SOURCE, DRIVER override)
up: $(STAMP)
	MONITOR_SOURCE=$${MONITOR_SOURCE-simcloud} DRIVER=$${DRIVER-simcloud} \
	SIMCLOUD_GROUPS=$${SIMCLOUD_GROUPS-web:3:1:5} \
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/honcho -f Procfile start

test: $(STAMP)
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# the generated parts of docs/: the settings tables (from the settings classes) and the
# benchmark figures (from bench/results/*.json)
docs: $(STAMP)
	$(BIN)/python -m harness.settings_doc
	$(BIN)/python -m bench.docs

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)
	$(BIN)/python -m bench.docs

# the fault suite against a private RabbitMQ node (~15 min); FAULTS="--fast" for the CI subset
faults: $(STAMP)
	$(BIN)/python -m harness.faults $(FAULTS)

# docker-compose.yml run for real (Docker, stand-in base images, a project of its own; ~5 min)
compose-test: $(STAMP)
	bash deploy/compose/test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
