# attnbench: `make test` runs lint and the tests, `make bench` runs the main benchmark job.
# Both set up .venv first. A python that already has torch (a GPU box's CUDA build, wherever it
# lives: site-packages, Debian's dist-packages, the user site, another venv) lends it, and its other
# packages, to the venv: every such folder on its path goes into the venv's _host_site.pth, after
# the venv's own. Elsewhere the venv gets the CPU build torch==2.13.0, never the multi-GB CUDA wheel.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
KERNEL_STAMP := $(VENV)/.installed-kernels
SITE_STAMP := $(VENV)/.installed-site
LINT_STAMP := $(VENV)/.installed-lint

# The folders of installed packages on the host python's path, one per line.
export HOST_SITES := import os, sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)))

.PHONY: setup test test-all test-faults lint format bench gpu-check gpu-check-run microbench site clean

setup: $(STAMP)

# A venv whose torch step failed is removed, so the next make retries it (never leaving a venv
# without torch, where installing the package would fetch the CUDA wheel).
$(PY):
	$(PYTHON) -m venv $(VENV)
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "using the torch of $(PYTHON): $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
		$(PYTHON) -c "$$HOST_SITES" > "$$($(PY) -c 'import site; print(site.getsitepackages()[0])')/_host_site.pth" \
			|| { rm -rf $(VENV); exit 1; }; \
	else \
		$(PY) -m pip install -q torch==2.13.0 || { rm -rf $(VENV); exit 1; }; \
	fi

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# On a GPU box: the `gpu` extra's kernels that have a wheel for this torch (never replacing it);
# the rest stay unavailable, with the reason, in `attnbench list` and in the run.
$(KERNEL_STAMP): $(STAMP)
	$(PY) -m attnbench.suite.core.kernels
	@touch $@

# The tests also run the cluster executors (Ray, submitit's local cluster) and open the site in
# Chromium through playwright (where a chromium binary is present; skipped with the reason elsewhere).
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,ray,slurm,site,browser]'
	@touch $@

# The import layers' checker (lint-imports), for lint only: a GPU box's gpu-check needs no wheel of it.
$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[lint]'
	@touch $@

$(SITE_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[site]'
	@touch $@

# ruff, and the import layers of pyproject.toml's [tool.importlinter] (docs/architecture.md).
lint: $(STAMP) $(LINT_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

# The slowest tests are listed after the run: CI runs this within its time limit.
test: lint $(TEST_STAMP)
	$(PY) -m pytest -m "not slow" --durations=15

test-all: lint $(TEST_STAMP)
	$(PY) -m pytest

# The slow fault injections (kill -9 cycles, every rogue plugin in every command); .ci/run runs them after `make test`.
test-faults: $(TEST_STAMP)
	$(PY) -m pytest -m slow tests/test_faults.py

# The main job: the `gpu` preset where torch sees a CUDA device, the `cpu` preset elsewhere.
# The run folder is results/<preset>-<device>; rerunning resumes it.
# A GPU that nvidia-smi lists but torch cannot see stops it with one line.
bench: $(STAMP) $(KERNEL_STAMP)
	$(PY) -m attnbench bench --preset auto

# The day a GPU is lent: the gpu-marked tests and the `gpu` preset in one call, into
# results/gpu-<device>/ (the tests' report beside the run). Without a GPU it stops at once, before
# any setup, with one line.
gpu-check:
	@nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || \
		{ echo "make gpu-check: no GPU visible (nvidia-smi lists none); run it on a machine with a CUDA GPU"; exit 1; }
	@$(MAKE) --no-print-directory gpu-check-run

gpu-check-run: $(TEST_STAMP) $(KERNEL_STAMP)
	$(PY) -m attnbench gpu-check

# The committed runs as a static site in site/ (git-ignored): open site/index.html.
site: $(SITE_STAMP)
	$(PY) -m attnbench site --out site

microbench: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-autosave

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache *.egg-info site test-artefacts
