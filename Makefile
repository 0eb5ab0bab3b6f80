# hetrec: `make demo` and `make test` work from a fresh clone.
#
# TORCH_SPEC picks the torch build. The default is the CPU build; on a GPU machine use e.g.
#   make demo TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.hetrec-installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m cluster.demo

# Two pytest processes: the unit and integration tests, then the local autoscaling cluster
# test, which ends with `ray stop` (every Ray process of the machine).
test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m cluster

bench: $(STAMP)
	$(BIN)/python benchmarks/partition.py

clean:
	rm -rf $(VENV) build *.egg-info
