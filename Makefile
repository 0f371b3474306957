# groundup: `make demo` runs build-cluster on the local sandbox, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: deps venv test unit integration e2e demo down status bench chaos clean

deps:
	bash scripts/install-deps.sh
	if [ "$$(id -u)" = 0 ]; then bash scripts/install-sandbox-deps.sh; fi

$(BIN)/.installed: pyproject.toml
	$(MAKE) deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/pytest -q

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv
	$(BIN)/pytest -q tests/integration

e2e: venv
	$(BIN)/pytest -q tests/e2e

demo: venv
	$(BIN)/groundup sandbox up
	$(BIN)/groundup sandbox demo clusters/sandbox.yaml
	@echo "sandbox still running: 'make status', 'make down'; env for prefect/groundup commands: /var/lib/groundup-sandbox/env"

down: venv
	$(BIN)/groundup sandbox down

status: venv
	$(BIN)/groundup sandbox status

bench: venv
	$(BIN)/python scripts/bench_build.py

chaos: venv
	$(BIN)/python scripts/chaos.py

clean:
	rm -rf $(VENV) .prefect .state
