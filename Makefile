# Zehanx developer commands. `make` alone lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
ZX := $(VENV)/bin/zx
# Per-test limit (pytest-timeout); the whole suite stays well under 20 minutes on 2 cores.
PYTEST_TIMEOUT ?= 300
PYTEST_ARGS ?=

.PHONY: help setup proto lint test bench demo clean distclean

help: ## List the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z-]*:.*## / { printf "  %-10s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

setup: ## Create .venv (Python 3.11), install pinned deps, sandbox tools, Node tooling (fast when done)
	@scripts/setup.sh

proto: setup ## Regenerate gen/python (and protos/build) from protos/
	$(PY) scripts/gen_protos.py

lint: setup ## ruff check, ruff format --check, mypy (strict on runtime/, default checks on the crawler and codegen), buf lint + format, generated code up to date
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy
	@if [[ -x scripts/buf_check.sh ]]; then scripts/buf_check.sh; fi
	$(PY) scripts/gen_protos.py --check

test: setup ## Run every test (after checking that generated code matches protos/)
	$(PY) scripts/gen_protos.py --check
	$(VENV)/bin/pytest -q --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS) tests/

bench: setup ## Run every bench/bench_*.py
	@shopt -s nullglob; benches=(bench/bench_*.py); \
	if (( $${#benches[@]} == 0 )); then echo "no bench/bench_*.py yet"; exit 0; fi; \
	for bench in "$${benches[@]}"; do echo "== $$bench"; $(PY) "$$bench"; done

demo: setup ## Start the suite, train "Classify handwritten digits" live, print the held-out result; leaves it running
	$(ZX) up --detach
	$(ZX) train "Classify handwritten digits" --follow
	@echo "The suite is still running (logs in $${ZX_HOME:-~/.zehanx}/logs). Stop it with: $(ZX) down"
	@echo "Dashboard: the address zx up printed above (http://127.0.0.1:47100 by default). To see this model there,"
	@echo "give the CLI's user a sign-in first: $(ZX) account password --email you@example.org"

clean: ## Remove caches and build outputs (keeps .venv and node_modules)
	find . -path ./.venv -prune -o -path ./node_modules -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache .hypothesis build protos/build

distclean: clean ## Also remove .venv and node_modules (the next make setup starts from scratch)
	rm -rf $(VENV) node_modules
