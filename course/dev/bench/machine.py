"""Where a measurement ran: versions, the machine, and a way to keep some of its cores busy."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys

import torch

#: What each ``--busy`` process runs: one thread of float32 matrix products, until the
#: benchmark that started it is gone (killed, it cannot clean up after itself).
_BUSY_LOOP = (
    "import os, sys\n"
    "parent = int(sys.argv[1])\n"  # given, not read: the parent may die while torch imports
    "import torch\n"
    "torch.set_num_threads(1)\n"
    "a = torch.randn(256, 256)\n"
    "while os.getppid() == parent:\n"
    "    a = torch.tanh(a @ a)\n"
)


@contextlib.contextmanager
def busy_cores(n: int):
    """Within the block, ``n`` processes each keep one core busy; they are killed after."""
    workers = [subprocess.Popen([sys.executable, "-c", _BUSY_LOOP, str(os.getpid())])
               for _ in range(n)]
    try:
        yield
    finally:
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.wait()


def versions() -> dict:
    from importlib import metadata

    try:
        diffusers = metadata.version("diffusers")
    except metadata.PackageNotFoundError:
        diffusers = "not installed"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers}


def machine_info(device=None) -> dict:
    """platform, cpu_count and, when ``device`` (or, without one, this machine) has cuda, gpu."""
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    gpu = torch.cuda.get_device_name(device) if cuda else None
    return {"platform": f"{platform.system()} {platform.machine()}",
            "cpu_count": os.cpu_count(), "gpu": gpu}


def machine() -> str:
    """One line: platform, cores, the GPU if any, python and torch."""
    info = machine_info()
    gpu = f", {info['gpu']}" if info["gpu"] else ""
    return (f"{info['platform']}, {info['cpu_count']} cores{gpu}, "
            f"python {platform.python_version()}, torch {torch.__version__}")
