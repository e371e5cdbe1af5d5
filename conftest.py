"""Test-wide setup: offline, FAST lessons, one torch thread per process."""

import os

# Kernels started by papermill, nbclient and the grader inherit these.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("COURSE_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Two xdist workers already fill both cores: one thread each avoids oversubscription, where
# torch's OpenMP threads spin waiting for a core and a kernel runs several times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


import pytest  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its own hook runs late)
def pytest_collection_modifyitems(items):
    """nbval makes one test per cell, and each notebook's cells share one kernel: under
    ``--dist loadgroup`` they must all run, in order, on the same xdist worker."""
    for item in items:
        if type(item).__module__.startswith("nbval"):
            item.add_marker(pytest.mark.xdist_group(name=f"nbval-{item.path.name}"))
