# `make train` / `make test` work on a fresh machine: they create .venv and install the package first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install fashion-mnist train test test-avx2 test-all test-cluster lint bench gpu-wheels gpu-dry-run clean

install: $(STAMP)

$(STAMP): pyproject.toml CMakeLists.txt $(wildcard resnet_jax/ops/*.cc resnet_jax/ops/*.h)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m resnet_jax.ops.onednn
	@touch $(STAMP)

# Fashion-MNIST's four files, where Debian's package puts them (data.root's default for data=fashion_mnist)
FASHION_MNIST := /usr/share/datasets/fashion-mnist

fashion-mnist:  ## Debian's dataset-fashion-mnist (apt-get, as root), unless its files are there already
	@test -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz || { \
		command -v apt-get >/dev/null || { echo "error: Fashion-MNIST is not in $(FASHION_MNIST) and apt-get is not here; put its four files in a folder and pass data.root=..." >&2; exit 2; }; \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }

train: install  ## ResNet-20 on the embedded digits data (about a minute on 2 CPU cores)
	$(BIN)/python -m resnet_jax.train $(ARGS)

# the default suite's tests spread over this many worker processes (pytest-xdist; an idle worker takes tests
# queued on a busy one, so a long test file does not finish alone at the end: 580 s against 606 s by whole
# files, though a module fixture then runs once per worker that needs it): one more than the CPUs, since
# tests also wait (on their commands, on submitit's polling); on 2 cores 3 workers finish ~10 % sooner than 2,
# and 4 far later (823 s against 560-588 s: more processes than cores cost more CPU time than they save)
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print((os.cpu_count() or 1) + 1)')

test: install fashion-mnist  ## the default suite (slow and cluster tests excluded), then lint
	$(BIN)/python -m pytest -q -m "not slow and not cluster" -n $(TEST_WORKERS) --dist worksteal --durations=20 $(ARGS)
	$(BIN)/ruff check resnet_jax hydra_plugins tests benchmarks

# the tests that compare two programs' results bit for bit, as a CPU with AVX2 and no AVX-512 rounds float32
# (XLA's and oneDNN's code for the older instruction set): CI runs them on both
test-avx2: install fashion-mnist  ## the `bits` tests again, computing as an AVX2-only CPU does
	XLA_FLAGS="$$XLA_FLAGS --xla_cpu_max_isa=AVX2" ONEDNN_MAX_CPU_ISA=AVX2 \
		$(BIN)/python -m pytest -q -m "bits and not slow and not cluster" $(ARGS)

test-all: install fashion-mnist  ## every test but the cluster tests, slow ones included
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

gpu-wheels: install  ## for an offline GPU machine: .gpu/wheels (what its image lacks) and .gpu/reference (PyTorch)
	$(BIN)/python benchmarks/gpu_wheels.py --download .gpu/wheels
	@test -f ../shared/bench/torch_cifar_resnet.py || { echo "error: the PyTorch references are not at ../shared/bench" >&2; exit 2; }
	mkdir -p .gpu/reference && cp ../shared/bench/torch_cifar_resnet.py ../shared/bench/torch_mlp.py .gpu/reference/

gpu-dry-run: gpu-wheels  ## benchmarks/gpu_check.sh on CPU at tiny sizes, PyTorch from its own environment
	$(TORCH_SETUP) $(TORCH_VENV)
	$(BIN)/python benchmarks/gpu_wheels.py --download .gpu/wheels-dry-run \
		--python-version $$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	WHEELS=.gpu/wheels-dry-run PYTHON=$(BIN)/python TORCH_PYTHON=$(TORCH_VENV)/bin/python OUT=$${OUT:-.gpu/dry-run} benchmarks/gpu_check.sh --dry-run

clean:
	rm -rf outputs multirun wandb .pytest_cache .ruff_cache
