# `make train` / `make test` work on a fresh machine: they create .venv and install the package first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install train test test-all test-cluster lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(wildcard resnet_jax/ops/*.cc resnet_jax/ops/*.h)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m resnet_jax.ops.onednn
	@touch $(STAMP)

train: install  ## ResNet-20 on the embedded digits data (about a minute on 2 CPU cores)
	$(BIN)/python -m resnet_jax.train $(ARGS)

test: install  ## the default suite (slow and cluster tests excluded), then lint
	$(BIN)/python -m pytest -q -m "not slow and not cluster" $(ARGS)
	$(BIN)/ruff check resnet_jax hydra_plugins tests benchmarks

test-all: install  ## every test but the cluster tests, slow ones included
	$(BIN)/python -m pytest -q -m "not cluster" $(ARGS)

test-cluster: install  ## against a real single-node SLURM, brought up (as root) and torn down around the tests
	tests/cluster/slurm_up.sh
	$(BIN)/python -m pytest -q -m cluster -rP tests/cluster $(ARGS); status=$$?; tests/cluster/slurm_down.sh; exit $$status

lint: install
	$(BIN)/ruff check resnet_jax hydra_plugins tests benchmarks
	$(BIN)/ruff format --check resnet_jax hydra_plugins tests benchmarks

TORCH_VENV := .venv-torch
TORCH_SETUP := ../shared/bench/setup-torch.sh

bench: install  ## speed/memory benchmarks as JSON; with the PyTorch references when ../shared/bench exists
	@if [ -x $(TORCH_SETUP) ]; then $(TORCH_SETUP) $(TORCH_VENV) && \
		$(BIN)/python benchmarks/bench.py --torch $(TORCH_VENV)/bin/python $(ARGS); \
	else $(BIN)/python benchmarks/bench.py $(ARGS); fi

clean:
	rm -rf outputs multirun wandb .pytest_cache .ruff_cache
