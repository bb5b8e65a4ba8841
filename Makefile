# The two commands: `make run` (the whole pipeline) and `make test`. Both create the
# virtualenv and install on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONUNBUFFERED := 1

.PHONY: install install-dev lint run sweep test test-fast ui clean

install: $(VENV)/.installed  ## what running needs
install-dev: $(VENV)/.installed-dev  ## plus the tests' and the linter's

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

run: install  ## one MLflow parent run per invocation groups the stages it runs
# make run PROFILE=quality: a named profile of profiles.yaml, run as a DVC experiment
ifdef PROFILE
	$(BIN)/python -m experiments.sweep --profiles $(PROFILE) --out experiments/results/$(PROFILE)
else
	$(BIN)/simrefinery run
endif

sweep: install  ## every profile of profiles.yaml -> experiments/results/sweep.md (about an hour on 2 cores)
	$(BIN)/python -m experiments.sweep

test: install-dev  ## two workers; the tests sharing a reproduced world run on one (tests/conftest.py)
	$(BIN)/python -m pytest -q -ra -n 2 --dist loadgroup

test-fast: install-dev
	$(BIN)/python -m pytest -q -ra -n 2 --dist loadgroup -m "not slow"

lint: install-dev  ## ruff (pyproject.toml's [tool.ruff]); .ci/run runs it before the tests
	$(BIN)/ruff check .

ui: install  ## the MLflow UI on the project's store: http://127.0.0.1:5000
	$(BIN)/simrefinery ui

clean:
	rm -rf data models mlruns mlartifacts mlflow.db
