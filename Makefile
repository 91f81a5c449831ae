# hubd: make run starts the main job, make test runs the suite. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck fmt bench clean deps chaos

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

deps: $(STAMP)

run: $(STAMP)
	$(BIN)/hubd cluster up --dir var/cluster

test: $(STAMP)
	scripts/install-test-deps
	$(BIN)/pytest -q

chaos: $(STAMP)
	HUBD_CHAOS_SECONDS=$${HUBD_CHAOS_SECONDS:-600} $(BIN)/pytest -q -s tests/integration/test_chaos.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/hubd bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
