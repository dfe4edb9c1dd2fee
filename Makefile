# make run: the whole pipeline on the defaults. make test: the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
export DESAFIO_HOME ?= $(CURDIR)/.desafio
export DESAFIO_OUTPUT_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(DESAFIO_HOME)/dagster

.PHONY: run test ui install install-dev bench stop-db clean screenshot

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[local]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	@mkdir -p "$(DAGSTER_HOME)"
	$(BIN)/python -m desafio_dagster.cli run

test: install-dev
	$(BIN)/ruff check desafio_dagster desafio_dagster_tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: install
	@mkdir -p "$(DAGSTER_HOME)"
	$(BIN)/dagster dev

bench: install-dev
	$(BIN)/python bench/bench_populate.py
	$(BIN)/python bench/bench_export.py

stop-db: install
	$(BIN)/python -m desafio_dagster.cli stop-db

clean: stop-db  # removes the embedded database, staging and the published output, nothing else
	rm -rf "$(DESAFIO_HOME)" "$(DESAFIO_OUTPUT_DIR)/movements_csv" "$(DESAFIO_OUTPUT_DIR)"/.movements_csv.*

screenshot: install-dev  # refresh docs/asset-graph.png from a real dagster dev + Chromium
	DESAFIO_UPDATE_SCREENSHOT=1 $(BIN)/python -m pytest desafio_dagster_tests/test_ui.py
