# Quick start:  make demo   (the main job)   |   make test   (the test suite)
# Both create .venv on first use: the CPU build of torch, then the locked test environment
# (requirements/dev-cpu.txt, every package pinned), then this project (editable, no deps).
# Where PyPI would hand you a CUDA build of torch that you do not want, pass
# TORCH_INDEX=https://download.pytorch.org/whl/cpu. On a CUDA machine the lock (made for the
# CPU build) is not used: the dev extra is installed from its ranges.
#
#   make test           the suite in the locked environment (what CI runs)
#   make test-latest    the suite against the newest releases the ranges allow (.venv-latest)
#   make test-oldest    the suite on the oldest torch and Lightning the package claims
#                       (.venv-oldest; requirements/oldest.txt; a large CUDA torch from PyPI)
#   make lock           regenerate requirements/dev-cpu.txt from pyproject.toml (pip-tools)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
PIP_VERSION := 26.3
LOCK := requirements/dev-cpu.txt
# LOCKED=1: the lock; 0: the dev extra's ranges (newest releases), optionally held by CONSTRAINTS
LOCKED ?= 1
CONSTRAINTS ?=
PYTEST_ARGS ?=
XDIST ?= -n auto --dist worksteal
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
ifeq ($(HAS_CUDA),1)
LOCKED := 0
endif
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

.PHONY: demo test test-latest test-oldest lock bench lint clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) "pip==$(PIP_VERSION)"
ifeq ($(HAS_CUDA),1)
	$(PIP_INSTALL) "torch<=2.14.1"
else ifneq ($(CONSTRAINTS),)
	$(PIP_INSTALL) torch -c $(CONSTRAINTS)
else
	$(PIP_INSTALL) "torch==$(TORCH_VERSION)"
endif
ifeq ($(LOCKED),1)
	$(PIP_INSTALL) -r $(LOCK)
	$(PIP_INSTALL) --no-deps -e .
else
	$(PIP_INSTALL) --upgrade --upgrade-strategy eager -e ".[dev]" "torch==$$($(PY) -c 'from importlib.metadata import version; print(version("torch"))')" \
		$(if $(CONSTRAINTS),-c $(CONSTRAINTS))
endif
	$(PY) -m pip check
	touch $@

demo: $(VENV)/.installed
	$(PY) -m blocksparsity.demo

test: $(VENV)/.installed
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS)

# Always re-resolved: the point is to meet a new release before a newcomer does.
# Another Python: make test-latest PYTHON=python3.13 LATEST_VENV=.venv-latest-3.13
LATEST_VENV ?= .venv-latest
test-latest:
	rm -f $(LATEST_VENV)/.installed
	$(MAKE) test VENV=$(LATEST_VENV) LOCKED=0

test-oldest:
	$(MAKE) test VENV=.venv-oldest LOCKED=0 CONSTRAINTS=requirements/oldest.txt

lock:
	test -x .venv-lock/bin/pip-compile || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install --quiet "pip==$(PIP_VERSION)" "pip-tools==7.7.0")
	echo "torch==$(TORCH_VERSION)" > .venv-lock/torch.in
	CUSTOM_COMPILE_COMMAND="make lock" .venv-lock/bin/pip-compile --quiet --upgrade --extra dev --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		-o $(LOCK) pyproject.toml .venv-lock/torch.in

bench: $(VENV)/.installed
	$(PY) -m benchmarks $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .venv-latest* .venv-oldest .venv-lock .pytest_cache .benchmarks
