# lmgcot: two commands do all the set-up.
#   make run    create .venv if missing, install, run `lmgcot` on the offline default
#   make test   install what the tests need if missing, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test install lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: a CPU build of 2.13.0; letting pip resolve torch itself can pull GBs of CUDA.
$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/lmgcot $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

lint: install
	$(BIN)/ruff check lmgcot tests benchmarks
	$(BIN)/ruff format --check lmgcot tests benchmarks

bench: install
	$(BIN)/python benchmarks/default_run.py

clean:
	rm -rf $(VENV) .pytest_cache
