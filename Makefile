# The README's two commands: `make lab` (learn) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first, pinned: left to a bare requirement, pip would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: lab test lessons bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab lessons/00_welcome.ipynb

test: $(VENV)/.installed-dev
	$(PY) -m ruff check course tests conftest.py
	$(PY) -m pytest -n 2 --dist loadgroup -rs --durations=15 tests solutions \
		--nbval-lax --nbval-cell-timeout=600 $(PYTEST_ARGS)

lessons: $(VENV)/.installed
	$(PY) -m course build-lessons

bench: $(VENV)/.installed-dev
	$(PY) -m course bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
