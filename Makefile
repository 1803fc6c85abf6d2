# lmgcot: two commands do all the set-up.
#   make run    create .venv if missing, install, run `lmgcot` on the offline default
#   make test   install what the tests need if missing, run the whole test suite (as CI does)
#   make test-fast   the same without the tests marked slow: under a minute on 2 cores
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test test-fast install constraints lint bench mutate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: a CPU build of 2.13.0; letting pip resolve torch itself can pull GBs of CUDA.
# constraints.txt holds every other dependency at the version README's figures were made with.
$(VENV)/.installed: pyproject.toml constraints.txt $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/lmgcot $(ARGS)

# Two workers (pytest-xdist), one torch thread each (tests/conftest.py): the tests are mostly
# single-threaded, so two processes keep two cores busy. Whole files go to one worker (loadfile):
# a module's shared fixture (one pipeline run, one batch of CLI processes) is paid once.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile

test: install
	$(PYTEST) $(ARGS)

# Tests marked slow left out (pipeline runs, the CLI in subprocesses, real training).
test-fast: install
	$(PYTEST) -m "not slow" $(ARGS)

# Rewrite constraints.txt from what .venv has now (after an upgrade that `make test` passed).
constraints:
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude lmgcot \
		| sed 's/^torch==.*/torch==2.13.0/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

lint: install
	$(BIN)/ruff check lmgcot tests benchmarks
	$(BIN)/ruff format --check lmgcot tests benchmarks

bench: install
	$(BIN)/python benchmarks/default_run.py

# Mutation testing of the numerical core, not run in CI: the RL math, the rewards and the
# comparison's statistics (about 1,750 mutants; docs/mutation.md has the counts and the survivors
# that are equivalent). mutmut mutates what [tool.mutmut] in pyproject.toml names, in a copy under
# mutants/, and runs the tests listed there against each mutant. A survivor is a change no test
# noticed: kill it with a test, or say why it is equivalent. `$(BIN)/mutmut show NAME` prints one
# mutant's diff. On a busy machine run one module at a time: make mutate MUTANTS='lmgcot.rewards.text*'
# mutants/ is removed first: mutmut does not rerun survivors when only the tests changed.
MUTANTS ?=
mutate: install
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[mutate]"
	rm -rf mutants
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) .pytest_cache mutants
