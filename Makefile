# The two commands of the quick start are `make run` and `make test`; every target
# creates the virtual environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-thorough bench bench-deps lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rcm-realtime scenarios run --target hub

test: $(STAMP)
	$(BIN)/pytest -q

test-thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# nginx with nchan (the comparison), uvloop and py-spy; needs root for apt-get.
bench-deps: $(STAMP)
	tools/install-bench-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) reports build *.egg-info
