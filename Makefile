# make run: the whole pipeline on the defaults. make test: the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# A setting that is unset, empty or blank takes its default, as in the CLI (core/settings.py).
or_default = $(if $(strip $($(1))),$($(1)),$(2))
DESAFIO_HOME := $(call or_default,DESAFIO_HOME,$(CURDIR)/.desafio)
DESAFIO_OUTPUT_DIR := $(call or_default,DESAFIO_OUTPUT_DIR,$(CURDIR)/data)
DAGSTER_HOME := $(call or_default,DAGSTER_HOME,$(DESAFIO_HOME)/dagster)
export DESAFIO_HOME DESAFIO_OUTPUT_DIR DAGSTER_HOME

.PHONY: run test test-quick chaos check ui install install-dev bench stop stop-db clean screenshot java test-tools

# Behind a TLS-intercepting proxy: EXTRA_CA_BUNDLE=/path/to/proxy-ca.pem make run. pip then
# trusts that bundle in addition to its own CA list (never instead of verification).
ifneq ($(EXTRA_CA_BUNDLE),)
CA_BUNDLE = $(VENV)/ca-bundle.pem
export PIP_CERT = $(abspath $(CA_BUNDLE))
endif

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/ca-bundle.pem: $(EXTRA_CA_BUNDLE) | $(BIN)/python
	cat "$$($(BIN)/python -c 'from pip._vendor import certifi; print(certifi.where())')" "$(EXTRA_CA_BUNDLE)" > $@

$(VENV)/.pip: $(CA_BUNDLE) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.pip
	$(BIN)/python -m pip install --quiet -e '.[local]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	@touch $@ $(VENV)/.installed

# System tools, checked before anything is installed: found, else installed with apt-get
# (as root or with passwordless sudo), else one line with the commands to run (scripts/setup).
java:
	@PYTHON=$(PYTHON) sh scripts/setup java
test-tools:
	@PYTHON=$(PYTHON) sh scripts/setup java chromium psql docker

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml  # the instance config of make run and make ui
	@mkdir -p "$(DAGSTER_HOME)"
	@cp dagster.yaml "$@"

run: java install $(DAGSTER_HOME)/dagster.yaml
	@$(BIN)/python -m desafio_dagster.cli run

# Lint, type the package (mypy: pyproject.toml), and load the definitions as Dagster's own tooling does (dg reads pyproject.toml's [tool.dg];
# an ephemeral instance: a fresh clone has no DAGSTER_HOME folder).
check: install-dev
	$(BIN)/ruff check desafio_dagster desafio_dagster_tests bench
	$(BIN)/mypy
	env -u DAGSTER_HOME VIRTUAL_ENV=$(abspath $(VENV)) PYTHONWARNINGS=ignore $(BIN)/dg check defs

# Tests spread over 3 processes (most of their time is spent waiting on Postgres, the JVM and subprocesses).
PARALLEL = $(BIN)/python -m pytest -n 3 --durations=15

# The quick loop: no Docker, browser or cluster, and none of the tests that start the project's
# commands in a fresh Python and JVM (marked `command`).
test-quick: java check
	$(PARALLEL) -m "not system and not command and not chaos" $(PYTEST_ARGS)

# The faults, counted: every test that injects one (a crash at each named step, S3's errors, the network to
# Postgres, a restart, a full disk), then their table. make test runs them too.
chaos: java install-dev
	$(PARALLEL) -m chaos $(PYTEST_ARGS)

# The whole suite: every test outside desafio_dagster_tests/system/ (the command tests included),
# then the system tests one at a time.
test: test-tools check
	$(PARALLEL) -m "not system" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m system --durations=15 $(PYTEST_ARGS)

ui: java install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev

bench: java install-dev
	$(BIN)/python bench/bench_populate.py
	$(BIN)/python bench/bench_export.py
	$(BIN)/python bench/bench_read.py

stop-db: install
	$(BIN)/python -m desafio_dagster.cli stop-db

# Between runs, the embedded Postgres and the Spark Connect server keep running (a run then starts in
# about a second); this stops both.
stop: install
	$(BIN)/python -m desafio_dagster.cli stop

clean: stop  # removes the embedded database, staging and the published output, nothing else
	rm -rf "$(DESAFIO_HOME)" "$(DESAFIO_OUTPUT_DIR)/movements_csv" "$(DESAFIO_OUTPUT_DIR)"/.movements_csv.*

screenshot: test-tools install-dev  # refresh docs/asset-graph.png from a real dagster dev + Chromium
	DESAFIO_UPDATE_SCREENSHOT=1 $(BIN)/python -m pytest desafio_dagster_tests/system/test_ui.py
