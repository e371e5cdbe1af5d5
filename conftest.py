"""Test-wide setup: offline, FAST lessons, and one xdist worker per notebook under nbval."""

import os

import pytest

# Kernels started by papermill, nbval and the grader inherit these.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("COURSE_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Two xdist workers already fill both cores: one thread each avoids oversubscription, where
# torch's OpenMP threads spin waiting for a core and a kernel runs several times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # nbval's cells of one notebook share a kernel, so they must stay on one xdist worker
    # (run with --dist loadgroup); every other test is spread freely.
    for item in items:
        if item.nodeid.endswith(".ipynb") or ".ipynb::" in item.nodeid:
            notebook = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".ipynb")
            item.add_marker(pytest.mark.xdist_group(f"notebook-{notebook}"))

