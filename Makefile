# attnbench: `make test` runs lint and the tests, `make bench` runs the main benchmark job.
# Both set up .venv first. A python that already has torch (a GPU box's CUDA build) lends it to
# the venv; elsewhere the venv gets the CPU build torch==2.13.0, never the multi-GB CUDA wheel.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: setup test test-all lint format bench microbench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "using the torch of $(PYTHON): $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
		$(PYTHON) -c "import site; print(site.getsitepackages()[0])" \
			> "$$($(PY) -c 'import site; print(site.getsitepackages()[0])')/_host_site.pth"; \
	else \
		$(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# The tests also run the cluster executors (Ray, submitit's local cluster): their extras.
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,ray,slurm]'
	@touch $@

lint: $(TEST_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -m "not slow"

test-all: lint
	$(PY) -m pytest

# The main job: the `gpu` preset where torch sees a CUDA device, the `cpu` preset elsewhere.
# The run folder is results/<preset>-<device>; rerunning resumes it.
# A GPU that nvidia-smi lists but torch cannot see stops it with one line.
bench: $(STAMP)
	$(PY) -m attnbench bench --preset auto

microbench: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-autosave

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
