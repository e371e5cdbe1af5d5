"""What a check allows the code it runs: a time limit per case, and the random state left alone.

A check leaves the learner's global random state (torch, Python's ``random``, NumPy) exactly as
it found it, however many random numbers the cases, the oracles or the learner's code draw; and
within a case, the learner's function and every known mistake start from the same seed.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import threading
from collections.abc import Iterator

import torch

#: Seconds one case may run before it counts as an endless loop.
DEFAULT_TIME_LIMIT = 10.0

#: The torch seed the learner's function (and every known mistake) starts from in each case, so a
#: verdict on code that draws random numbers is the same on every run, and a mistake that draws
#: them draws the very same ones. Set inside :func:`preserved_rng`, so the learner never sees it.
CASE_SEED = 1234


class CheckTimeout(BaseException):
    """Raised inside the learner's code when a case runs out of time.

    A BaseException, so that a learner's ``except Exception:`` cannot swallow it.
    """


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt the block after ``seconds`` with :class:`CheckTimeout`.

    Uses SIGALRM, which only the main thread of a Unix process can receive; Jupyter runs cells
    there. Elsewhere (Windows, a worker thread) the block runs without a limit.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds is None:
        yield
        return

    def on_alarm(signum, frame):
        raise CheckTimeout(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block, then put every global random state back as it was.

    Covers torch's CPU generator, CUDA's when CUDA is already in use (asking an unused CUDA for
    its state would start it), MPS's, Python's ``random`` and NumPy's legacy global state when
    NumPy is loaded. A learner who seeds once and then runs a check gets the same numbers
    afterwards as without the check.
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    python_state = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_state = numpy.random.get_state() if numpy is not None else None
    mps_state = _mps_rng_state()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        if not cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
            # CUDA started inside the block: rewind its generators to where they began.
            for generator in torch.cuda.default_generators:
                generator.manual_seed(generator.initial_seed())
        random.setstate(python_state)
        if numpy_state is not None:
            numpy.random.set_state(numpy_state)
        if mps_state is not None:
            torch.mps.set_rng_state(mps_state)


def seed_case() -> None:
    """Seed the generators :func:`preserved_rng` restores, and only those, with :data:`CASE_SEED`.

    Not ``torch.manual_seed``: before CUDA starts, that queues a seeding of CUDA's generator for
    when it does, which would outlive the check.
    """
    torch.default_generator.manual_seed(CASE_SEED)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(CASE_SEED)


def _mps_rng_state() -> torch.Tensor | None:
    """The MPS generator's state on Apple GPUs, else None."""
    try:
        if torch.backends.mps.is_available():
            return torch.mps.get_rng_state()
    except Exception:  # noqa: BLE001 - an MPS build without RNG access: nothing to keep
        pass
    return None
