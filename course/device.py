"""Where code runs and how it is made repeatable.

Everything a lesson needs to know about its environment lives here: which device to use (and,
on a CPU, how many threads: see ``course.threads``), how to seed every random number generator,
whether it runs on Colab or Binder, whether the Hugging Face hub can be reached, and whether it
should run in FAST mode.
"""

from __future__ import annotations

import os
import platform
import random
import socket
import sys
from importlib import metadata

import torch

from .threads import use_available_cpus

#: Set to "1" by the test-suite (and by anyone in a hurry): lessons then run their FAST path.
FAST_ENV_VAR = "COURSE_FAST"


def fast_mode(requested: bool = False) -> bool:
    """True when a lesson should take its quick path: asked for, or forced by COURSE_FAST=1."""
    return bool(requested) or os.environ.get(FAST_ENV_VAR, "").lower() in {"1", "true", "yes"}


def pick_device(preference: str = "auto") -> torch.device:
    """The device lessons compute on: ``"auto"`` picks cuda, then mps, then cpu.

    Any explicit name (``"cpu"``, ``"cuda:1"``, ...) is honoured, and one that is not
    available gets a clear error instead of a crash deep inside a model. On the CPU, torch's
    thread count is set to the CPUs this process really has free (``course.threads``).
    """
    device = _device_named(preference)
    if device.type == "cpu":
        use_available_cpus()
    return device


def _device_named(preference: str) -> torch.device:
    if preference in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={preference!r} was asked for, but torch sees no CUDA GPU here.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"DEVICE={preference!r} was asked for, but MPS is not available here.")
    return device


def pick_dtype(device: torch.device) -> torch.dtype:
    """float16 halves memory on a GPU for inference; CPUs compute float32 faster and exactly."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy (when present) and torch; return a CPU generator seeded the same way.

    Passing the returned generator to sampling code makes a result independent of anything else
    that consumed random numbers in between, which is what "same seed, same image" needs.
    """
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional for the course itself
        pass
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def in_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def in_binder() -> bool:
    return "BINDER_SERVICE_HOST" in os.environ or "BINDER_REQUEST" in os.environ


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers; False at once when ``HF_HUB_OFFLINE`` is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_report(probe_network: bool = True) -> dict[str, str]:
    """What this machine has, as shown in lesson 00 and by ``python -m course doctor``."""
    device = _device_named("auto")
    report = {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "ipywidgets": _version("ipywidgets"),
        "device": str(device),
    }
    if device.type == "cpu":
        report["torch threads"] = str(use_available_cpus())
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    report["running on"] = "Colab" if in_colab() else "Binder" if in_binder() else "local Jupyter"
    hub = hub_reachable() if probe_network else False
    report["hub"] = "reachable" if hub else "offline: lessons use the bundled models"
    report["FAST mode"] = "on" if fast_mode() else "off"
    return report
