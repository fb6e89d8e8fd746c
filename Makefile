# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY := true
export NUMBA_CACHE_DIR ?= $(CURDIR)/.venv/numba-cache
export MPLCONFIGDIR ?= $(CURDIR)/.venv/mpl-config

.PHONY: setup demo test ui clean mlproject

setup: $(VENV)/.installed

# torch exactly as the project's machines need it (a CUDA build; the CPU-only build breaks
# torchvision there), then the package with its test extras.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# the tests also cover the optional BirdNET feature source (weights CC BY-NC-SA 4.0, non-commercial:
# installed for the tests only, never by `make setup` or `make demo`)
$(VENV)/.birdnet: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test,birdnet]'
	touch $@

test: setup $(VENV)/.birdnet
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: setup
	$(BIN)/nscnet ui

mlproject: setup
	$(BIN)/python -m nscnet.mlproject > MLproject

clean:
	rm -rf demo mlflow.db mlartifacts optuna.journal optuna.journal.cache checkpoints .pytest_cache
