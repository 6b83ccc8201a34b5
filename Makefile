# Two set-up commands, both working on a fresh machine with only Python 3.11:
#   make demo   create .venv, install, run the demo training job
#   make test   create .venv, install the test extras, run the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.dev-installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/python examples/demo_digits.py

test: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/save_restore.py --size-mib 256
	$(BIN)/python benchmarks/async_save.py --sizes 64
	$(BIN)/python benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
