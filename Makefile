# One command each, on a fresh machine with python3 (3.11+):
#   make run    set up .venv and run the service on its embedded defaults
#   make test   set up .venv with the test tools and run the whole test suite
#   make cluster  PostgreSQL, SeaweedFS and three replicas, to try several replicas
#   make check  lint, type-check, buf lint, generated code fresh, each wheel alone
#   make ci     what .ci/run does: check + test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test check ci cluster generate generate-check lint typecheck buf-lint contract-baseline layers bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The four distributions, editable, and the workspace's dev tools.
DISTRIBUTIONS := proto interceptor client server
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(DISTRIBUTIONS))

$(STAMP): $(PYPROJECTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(addprefix -e ./,$(DISTRIBUTIONS)) -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/auditline serve $(ARGS)

# PostgreSQL, SeaweedFS and three replicas on free ports, until Ctrl-C (tools/cluster.py).
cluster: $(STAMP)
	$(BIN)/python tools/cluster.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(ARGS)

generate: $(STAMP)
	$(BIN)/python tools/generate.py

# Regenerate and fail if that changed anything: committed code must match proto/.
GENERATED_DIRS := proto tests/generated

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
	$(BIN)/buf breaking --against $(CONTRACT_BASELINE)

# The contract as last released: `buf breaking` compares proto/ with it (FILE rules).
# At a release, `make contract-baseline` takes the new one; commit it with the tag.
CONTRACT_BASELINE := tools/contract-baseline.binpb

contract-baseline: $(STAMP)
	$(BIN)/buf build -o $(CONTRACT_BASELINE)

# Every wheel alone in a clean virtual environment: its dependencies suffice and its
# imports stay in its layer (tests/test_packaging.py; `make test` runs it too).
layers: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests/test_packaging.py

check: buf-lint generate-check lint typecheck layers

ci: check test

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
