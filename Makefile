# The two commands of the quick start are `make run` and `make test`; every target
# creates the virtual environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-thorough bench bench-deps soak lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rcm-realtime scenarios run --target both

test: $(STAMP)
	$(BIN)/pytest -q

# Long Hypothesis runs: thousands of examples a property outlast the per-test
# timeout of pyproject.toml, so it is raised to an hour here.
test-thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(BIN)/pytest -q --timeout=3600

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# nginx with nchan (the comparison), uvloop and py-spy; needs root for apt-get.
bench-deps: $(STAMP)
	tools/install-bench-deps.sh

# Real hubs on RabbitMQ under load, churn and faults: 10 minutes, 60 s when CI is
# set; SOAK_ARGS passes more flags (SOAK_ARGS='--duration 30m --clients 200').
soak: $(STAMP)
	$(BIN)/rcm-realtime soak $(SOAK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) reports build *.egg-info
