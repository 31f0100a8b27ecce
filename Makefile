# `make demo` and `make test` work on a fresh machine: both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build on this machine's disk; GPU users pass their own, e.g. make TORCH=torch test.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint bench clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[ray,test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/copick-soup demo --out demo_out

test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/simulate.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
