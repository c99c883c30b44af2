# The two commands (README): `make demo` runs the main job on the embedded default (this machine,
# no Slurm); `make test` runs the tests, starting the local two-node Slurm cluster first (as root).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test slurm setup bench clean

setup: $(VENV)/.installed

# torch pinned to the CPU build for dev/CI; LUMI jobs get torch from the ROCm container
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "torch==2.13.0" -e ".[dev,demo,translate]"
	touch $@

# EuroEval pins other versions of huggingface_hub/numpy than the dev venv: its adapter test runs
# in a venv of its own, with the real package
$(VENV)-euroeval/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)-euroeval
	$(VENV)-euroeval/bin/pip install -q "torch==2.13.0" euroeval pytest -e .
	touch $@

# the whole recipe with tiny models on this machine's CPU (translate ... model card), ~1-2 min
demo: setup
	$(BIN)/python -m dfm_hpc +experiment=pipeline_tiny

slurm:
	@if [ "$$(id -u)" = 0 ]; then bash slurm/start.sh; \
	else echo "not root: the local Slurm cluster is not started; the real-Slurm tests will skip"; fi

test: setup slurm $(VENV)-euroeval/.installed
	$(BIN)/python -m pytest -q
	$(VENV)-euroeval/bin/python -m pytest -q tests/test_evaluate.py -k euroeval

bench: setup
	$(BIN)/python bench/login_latency.py

clean:
	rm -rf $(VENV) $(VENV)-euroeval runs
