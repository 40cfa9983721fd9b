# One command each, on a fresh machine with python3 (3.11+):
#   make run    set up .venv and run the service on its embedded defaults
#   make test   set up .venv with the test tools and run the whole test suite
#   make check  lint, type-check, buf lint, and check that generated code is fresh
#   make ci     what .ci/run does: check + test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test check ci generate generate-check lint typecheck buf-lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/auditline serve $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(ARGS)

generate: $(STAMP)
	$(BIN)/python tools/generate.py

# Regenerate and fail if that changed anything: committed code must match proto/.
GENERATED_DIRS := client/auditline/account client/auditline/audit tests/generated

generate-check: generate
	@test -z "$$(git status --porcelain --untracked-files=all -- $(GENERATED_DIRS))" || \
	  (git status --short -- $(GENERATED_DIRS); git diff --stat -- $(GENERATED_DIRS); \
	   echo "generated code is stale: run 'make generate' and commit" >&2; exit 1)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

buf-lint: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code

check: buf-lint generate-check lint typecheck

ci: check test

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
