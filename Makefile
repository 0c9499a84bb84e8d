# Two commands on a fresh machine: `make tutorial` and `make test`.
# Each creates the virtual environment on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

# Real data sets: use ../shared/data when it exists and nothing else was set.
ifeq ($(TFPRUNE_DATA_DIR),)
ifneq ($(wildcard ../shared/data),)
export TFPRUNE_DATA_DIR := $(abspath ../shared/data)
endif
endif

.PHONY: install tutorial test test-fast bench docs clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

tutorial: $(STAMP)
	$(BIN)/python tutorials/mnist_magnitude.py

# Two workers (pytest-xdist): most of the suite's time is TensorFlow tracing and TFLite conversion,
# which run on one core each.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

clean:
	rm -rf $(VENV) outputs site .pytest_cache
