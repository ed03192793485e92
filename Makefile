# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
CLIENTS := /usr/bin/scepclient /usr/sbin/certmonger

.PHONY: run test lint typecheck format bench clients clean docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

## make run: serve config.example/ on http://127.0.0.1:8080 (demo CA created on first start)
run: $(STAMP)
	$(BIN)/scep-gateway serve --config config.example --data-dir var --bind 127.0.0.1:8080

# The real SCEP clients the interop tests drive (Debian packages `scep` and `certmonger`).
clients:
	@missing=0; for f in $(CLIENTS); do [ -x $$f ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends scep certmonger; \
	fi

## make test: install what the tests need and run everything (lint, types, all tests)
test: $(TEST_STAMP) clients lint typecheck
	$(BIN)/pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

format: $(TEST_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(TEST_STAMP) clients
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

## make docs: regenerate docs/configuration.md from gateway/config/schemas/
docs: $(STAMP)
	$(BIN)/python -m gateway.config.reference > docs/configuration.md
