"""Test-wide setup: offline, FAST lessons, one torch thread per process."""

import os

# Kernels started by papermill, nbclient and the grader inherit these.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("COURSE_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Two xdist workers already fill both cores: one thread each avoids oversubscription, where
# torch's OpenMP threads spin waiting for a core and a kernel runs several times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
