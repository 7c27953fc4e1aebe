# One command runner: CI calls the same targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# two installs: what running needs (make up), and the tools on top (tests, lint, ...)
RUN     := $(VENV)/.installed-run
DEV     := $(VENV)/.installed-dev

.PHONY: venv up test unit lint fmt docs bench faults compose-test clean

venv: $(DEV)

$(RUN): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV): $(RUN)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# the demo: simcloud, and the producer watching it (MONITOR_SOURCE, DRIVER override).
# First, with .env read as honcho reads it: does RabbitMQ answer at AMQP_URL? Flower's
# password is made once per run (unless FLOWER_BASIC_AUTH sets one), for Flower and for
# the banner, which prints it once every service is ready.
# SHARDS=N (more than 1): N dispatchers (honcho's dispatcher.1 ... dispatcher.N), each an
# active shard (DISPATCHER_PARTITIONS, 16 unless set), each on a port of its own
# (DISPATCHER_PORT_SPAN); the banner waits for every one of them and lists them.
SHARDS ?= 1
ifneq ($(strip $(SHARDS)),1)
SHARDED := DISPATCHER_PARTITIONS=$${DISPATCHER_PARTITIONS:-16} DISPATCHER_PORT_SPAN=$(SHARDS) \
	CAROUSEL_DISPATCHERS=$(SHARDS)
CONCURRENCY := -c dispatcher=$(SHARDS)
endif

up: $(RUN)
	@case '$(SHARDS)' in ''|*[!0-9]*|0*) echo "make up: SHARDS=$(SHARDS): give the number of dispatchers, 1 or more" >&2; exit 2;; esac
	@$(BIN)/honcho run $(BIN)/python -m shared.brokercheck
	$(SHARDED) MONITOR_SOURCE=$${MONITOR_SOURCE-simcloud} DRIVER=$${DRIVER-simcloud} \
	SIMCLOUD_GROUPS=$${SIMCLOUD_GROUPS-web:3:1:5} \
	FLOWER_BASIC_AUTH=$${FLOWER_BASIC_AUTH:-admin:$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(16))')} \
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/honcho -f Procfile start $(CONCURRENCY)

test: $(DEV)
	$(BIN)/pytest

unit: $(DEV)
	$(BIN)/pytest tests/unit

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(DEV)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# the generated parts of docs/ and .env.example: the settings (from the settings classes),
# the benchmark figures (from bench/results/*.json) and the fault table
docs: $(DEV)
	$(BIN)/python -m harness.settings_doc
	$(BIN)/python -m harness.env_example
	$(BIN)/python -m bench.docs
	$(BIN)/python -m harness.faults.docs

bench: $(DEV)
	$(BIN)/python -m bench $(BENCH)
	$(BIN)/python -m bench.docs

# the fault suite on a private RabbitMQ node (~12 min): a run on a SQLite ledger, then one on
# a database of its own on the local PostgreSQL; FAULTS="--fast" for the CI subset. A
# complete run records its table for docs/reliability.md
faults: $(DEV)
	$(BIN)/python -m harness.faults $(FAULTS)

# docker-compose.yml run for real (Docker, stand-in base images, a project of its own; ~5 min)
compose-test: $(DEV)
	bash deploy/compose/test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
