# The two commands of the README: `make serve` and `make test` (lint, type check, tests). Each sets up .venv first
# (only when pyproject.toml changed since the last install): serving needs only the runtime dependencies; the tests,
# the linters and the benchmark add the development set (browser driver, fuzzers, type checker ...).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: serve test bench setup clean

serve: $(RUNTIME)
	$(VENV)/bin/modelyard serve

test: $(DEV)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -n auto --dist worksteal $(PYTEST_ARGS)

bench: $(DEV)
	@command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install wrk"; exit 2; }
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)
	$(VENV)/bin/python bench/lists.py $(BENCH_ARGS)
	$(VENV)/bin/python bench/memory.py $(BENCH_ARGS)

setup: $(DEV)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(RUNTIME) $(DEV)

clean:
	rm -rf $(VENV) registry.db registry.db-* .pytest_cache
