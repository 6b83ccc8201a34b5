# Two set-up commands, both working on a fresh machine with only Python 3.11:
#   make demo   create .venv, install, run the demo training job
#   make test   create .venv, install the test extras, run the whole suite
#   make test-ray  create .venv-ray with the `ray` extra, run the opt-in Ray Train test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RAY_VENV := .venv-ray

.PHONY: demo test test-ray lint bench clean

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
	$(BIN)/mypy --config-file examples/mypy.ini examples
	$(BIN)/python -m pytest -q

# Ray stays out of the dev extra (large; a job takes a minute here): its own venv.
$(RAY_VENV)/.ray-installed: pyproject.toml
	$(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RAY_VENV)/bin/python -m pip install --quiet -e '.[ray]' 'pytest>=8' 'pytest-timeout>=2.3'
	touch $@

test-ray: $(RAY_VENV)/.ray-installed
	TRAINHOOKS_RAY=1 $(RAY_VENV)/bin/python -m pytest -q tests/dist/test_ray_train.py

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/save_restore.py --size-mib 256
	$(BIN)/python benchmarks/async_save.py --sizes 64
	$(BIN)/python benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) $(RAY_VENV) build dist src/*.egg-info
