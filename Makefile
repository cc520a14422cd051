# Two commands on a fresh machine:
#   make demo   — install everything, then run the main job on built-in synthetic data
#   make test   — install everything, then run the test suite
PYTHON ?= python3
PIP = $(PYTHON) -m pip
RUN ?= runs/demo

.PHONY: install demo test bench

# torch==2.13.0 first: with it installed, the package's `torch>=2.1` is satisfied and pip pulls
# no CUDA wheels on a CPU machine. Set TORCH_SPEC to install another build.
TORCH_SPEC ?= torch==2.13.0
install:
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"

demo: install
	$(PYTHON) -m gclreid demo --out $(RUN)

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) bench/run_all.py
