# The README's two commands: `make lab` (learn) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first, pinned: left to a bare requirement, pip would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
# JupyterLab refuses to start as root (containers, some cloud machines) without --allow-root.
USER_ID  ?= $(shell id -u)
LAB_ARGS ?= $(if $(filter 0,$(USER_ID)),--allow-root,)

.PHONY: lab test lessons bench clean

# A learner's environment: the course and JupyterLab (the `lab` extra).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[lab]"
	touch $@

# A maintainer's: also the grader, the test tools and the authoring tools (the `dev` extra).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab $(LAB_ARGS) lessons/00_welcome.ipynb

test: $(VENV)/.installed-dev
	$(PY) -m ruff check course tests conftest.py
	$(PY) -m pytest -n 2 --dist loadgroup -rs --durations=15 tests solutions \
		--nbval-lax --nbval-current-env $(PYTEST_ARGS)

lessons: $(VENV)/.installed-dev
	$(PY) -m course build-lessons

bench: $(VENV)/.installed-dev
	$(PY) -m course bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
