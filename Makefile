# The README's commands: `make lab` (learn), `make test` (the whole suite but the slow tests)
# and `make test-browser-lessons` (those: every lesson in the browser).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first, pinned: a bare requirement would pull whatever build is newest.
# PyPI's Linux wheel of torch==2.13.0 is the CUDA build (several GB, useless without a GPU), so on
# a Linux machine without nvidia-smi we ask for the CPU build, torch==2.13.0+cpu, which lives on
# PyTorch's own index, or on disk where PIP_FIND_LINKS keeps it (as on CI: then no other index is
# asked). macOS wheels on PyPI are CPU (and MPS) builds already.
HAS_GPU   := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
CPU_BUILD := $(if $(HAS_GPU),,$(filter Linux,$(shell uname -s)))
TORCH     ?= torch==2.13.0$(if $(CPU_BUILD),+cpu)
TORCH_ON_DISK := $(if $(PIP_FIND_LINKS),$(wildcard $(PIP_FIND_LINKS)/torch-2.13.0+cpu-*.whl))
TORCH_INDEX ?= $(if $(CPU_BUILD),$(if $(TORCH_ON_DISK),,--extra-index-url https://download.pytorch.org/whl/cpu))
PYTEST_ARGS ?=
# JupyterLab refuses to start as root (containers, some cloud machines) without --allow-root.
USER_ID  ?= $(shell id -u)
LAB_ARGS ?= $(if $(filter 0,$(USER_ID)),--allow-root,)

.PHONY: lab test test-browser-lessons test-offline lessons bench clean

# A learner's environment: the course and JupyterLab (the `lab` extra).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)" $(TORCH_INDEX)
	$(PY) -m pip install --quiet -e ".[lab]"
	touch $@

# A maintainer's: also the grader, the test tools and the authoring tools (the `dev` extra).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab $(LAB_ARGS) lessons/00_welcome.ipynb

test: $(VENV)/.installed-dev
	$(PY) -m ruff check course tests tools conftest.py solutions
	$(PY) -m pytest -n 2 --dist loadgroup -rs --durations=15 tests solutions \
		--nbval-lax --nbval-current-env $(PYTEST_ARGS)

# Every lesson in JupyterLab and Chromium in the learner's default mode, every widget control
# moved (the `slow` tests, which `make test` leaves out): 15 to 30 minutes on 2 cores.
test-browser-lessons: $(VENV)/.installed-dev
	$(PY) -m pytest -p no:xdist -m "slow and browser" -rs -s tests/test_lessons_in_browser.py \
		$(PYTEST_ARGS)

# The notebooks with no network at all (tools/offline.sh: a network namespace with only the
# loopback); HF_HUB_OFFLINE=0, so that nothing leans on the variable.
test-offline: $(VENV)/.installed-dev
	HF_HUB_OFFLINE=0 tools/offline.sh $(PY) -m pytest -n 2 --dist loadgroup -rs \
		tests/test_notebooks.py tests/test_real_sd_cells.py solutions \
		--nbval-lax --nbval-current-env $(PYTEST_ARGS)

lessons: $(VENV)/.installed-dev
	$(PY) -m course build-lessons

bench: $(VENV)/.installed-dev
	$(PY) -m course bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
