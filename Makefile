# One command runner: CI calls the same targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: venv up test unit lint fmt bench faults compose-test clean

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

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)

# the fault suite on a private RabbitMQ node (~12 min): a run on a SQLite ledger, then one on
# a database of its own on the local PostgreSQL; FAULTS="--fast" for the CI subset
faults: $(STAMP)
	$(BIN)/python -m harness.faults $(FAULTS)

# docker-compose.yml run for real (Docker, stand-in base images, a project of its own; ~5 min)
compose-test: $(STAMP)
	bash deploy/compose/test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
