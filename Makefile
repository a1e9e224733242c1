# Two entry points (see README): `make demo` runs the end-to-end demo, `make test` runs the tests.
# Each creates and uses the project's own virtual environment in .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint check clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode --quiet -e '.[dev,spark]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/patron demo

# Two workers (pytest-xdist): each module is one unit, handed out in xdist's order (by number of
# tests; the heavy-first order of tests/conftest.py holds in one process); the 25 slowest tests
# are listed. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=25

# The gates CI runs before the tests: lint, format, types, the import-layer contract.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

lint: check

clean-venv:
	rm -rf $(VENV)
