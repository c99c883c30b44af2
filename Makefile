# The two commands (README): `make demo` runs the main job on the embedded default (this machine,
# no Slurm); `make test` runs the tests, starting the local two-node Slurm cluster first (as root).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast slurm setup bench gpu-wheels lock lock-check clean

setup: $(VENV)/.installed

# Installs come from the locks in requirements/ (make lock writes them from pyproject.toml):
#   login.txt  the login node (no extras)       dev.txt  dev/CI: every extra, torch 2.13.0 CPU
#   lumi.txt   the LUMI overlay (train, translate; no torch: the ROCm container has it)
#   harness.txt       the harness venv here (.venv-euroeval: EuroEval, inspect-ai, dfm_hpc's own, torch CPU)
#   harness-lumi.txt  the LUMI harness overlay (containers/build_harness.sh; Python 3.12, no torch)
# PIP_ARGS: e.g. --extra-index-url https://download.pytorch.org/whl/cpu where no local CPU wheel is
PIP_ARGS ?=
$(VENV)/.installed: requirements/dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP_ARGS) -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# uv (from PyPI) resolves; torch's CPU build from a local wheel dir, else the PyTorch CPU index
UV_VERSION ?= 0.13.9
TORCH_CPU := $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),--find-links /opt/wheels,--torch-backend cpu)
LOCK_OUT ?= requirements
COMPILE = $(BIN)/uv pip compile -q pyproject.toml --custom-compile-command "make lock"
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "uv==$(UV_VERSION)"
	$(COMPILE) --python-version 3.11 -o $(LOCK_OUT)/login.txt
	$(COMPILE) --python-version 3.11 --extra dev --extra demo --extra translate --extra train \
	  -c requirements/torch-cpu.in $(TORCH_CPU) -o $(LOCK_OUT)/dev.txt
	$(COMPILE) --python-version 3.12 --extra train --extra translate --excludes requirements/no-torch.in \
	  -o $(LOCK_OUT)/lumi.txt
	$(COMPILE) requirements/harness.in --python-version 3.11 -c requirements/torch-cpu.in $(TORCH_CPU) \
	  -o $(LOCK_OUT)/harness.txt
	$(BIN)/uv pip compile -q requirements/harness.in --custom-compile-command "make lock" --python-version 3.12 \
	  --excludes requirements/no-torch.in -o $(LOCK_OUT)/harness-lumi.txt

# would `make lock` change anything? (needs the package index; tests/test_lock.py is the offline check)
lock-check:
	rm -rf .lock-check && mkdir -p .lock-check
	$(MAKE) -s lock LOCK_OUT=.lock-check
	diff -r -x '*.in' requirements .lock-check && echo "locks are current" && rm -rf .lock-check

# The harness environment: EuroEval and inspect-ai pin other versions of huggingface_hub/numpy than the
# dev venv: they run in a venv of their own, as the evaluate stage's clients of a served model
# (tests/job/test_serve.py and tests/job/test_harness_inspect.py start them from there), from its lock;
# on LUMI the harness overlay (containers/build_harness.sh, Python >= 3.12 and EuroEval >= 17)
$(VENV)-euroeval/.installed: requirements/harness.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)-euroeval
	$(VENV)-euroeval/bin/pip install -q $(PIP_ARGS) -r requirements/harness.txt
	$(VENV)-euroeval/bin/pip install -q --no-deps -e .
	touch $@

# the whole recipe with tiny models on this machine's CPU (translate ... model card), ~1-2 min
demo: setup
	$(BIN)/python -m dfm_hpc +experiment=pipeline_tiny

slurm:
	@if [ "$$(id -u)" = 0 ]; then bash slurm/start.sh; \
	else echo "not root: the local Slurm cluster is not started; the real-Slurm tests will skip"; fi

# the import contract (pyproject.toml) and ruff first: seconds, and they name the rule that broke
test: setup slurm $(VENV)-euroeval/.installed
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check dfm_hpc tests bench docs
	$(BIN)/python -m pytest -q
	$(VENV)-euroeval/bin/python -m pytest -q tests/stages/test_evaluate.py -k euroeval

# the inner loop: everything but the e2e tier (tests/e2e/, Slurm, real training and serving), no Slurm
# cluster needed; a few minutes on 2 cores (docs/benchmarks.md)
test-fast: setup
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check dfm_hpc tests bench docs
	$(BIN)/python -m pytest -q -m "not e2e"

# side by side in one run each (docs/benchmarks.md); the tokenize one takes ~1 min on 2 cores
bench: setup
	$(BIN)/python bench/login_latency.py
	$(BIN)/python bench/tokenize_throughput.py --threads 1 --rounds 3

# the wheels the GPU check carries to the GPU machine (./.whl, from PyPI; docs/benchmarks.md#gpu-check)
gpu-wheels: setup
	PYTHON=$(BIN)/python bash bench/carry_wheels.sh

clean:
	rm -rf $(VENV) $(VENV)-euroeval runs
