"""What a run writes down beside its checkpoint: the recipe as run, how long it took, where, with
how many threads and which library versions; and the loss curve, as means over windows."""

from __future__ import annotations

import platform
from importlib import import_module

import torch


def device_name(device: torch.device) -> str:
    """"cuda (NVIDIA H200)", "cpu (x86_64)": the device type and the chip's name."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return f"{device.type} ({name or platform.machine()})"


def versions(*libraries: str) -> dict[str, str]:
    """{"torch": "2.13.0", ...}: torch's version and that of each library named."""
    return {name: import_module(name).__version__ for name in ("torch", *libraries)}


def run_record(recipe, seconds: float, device: torch.device, libraries=(), **facts) -> dict:
    """The common part of every ``training.json`` / checkpoint ``info``: the recipe (as run),
    ``train_seconds``, the device, torch's thread count and the versions of torch and
    ``libraries``; ``facts`` (losses, parameter counts, ...) go in between, in order."""
    return {"recipe": recipe.to_dict(), "train_seconds": round(seconds, 1), **facts,
            "device": device_name(device), "threads": torch.get_num_threads(),
            "versions": versions(*libraries)}


class Window:
    """Mean loss over windows of ``size`` steps, summed on the device (reading a value back
    synchronises a GPU, so that happens once a window)."""

    def __init__(self, device, size: int = 50):
        self.size, self.means = size, []
        self.total, self.count = torch.zeros((), device=device), 0

    def add(self, value: torch.Tensor) -> float | None:
        """Add one step's loss; the window's mean when this step closes one, else None."""
        self.total += value.detach().float()
        self.count += 1
        return self.flush() if self.count == self.size else None

    def flush(self) -> float | None:
        if self.count == 0:
            return None
        self.means.append(round(self.total.item() / self.count, 6))
        self.total.zero_()
        self.count = 0
        return self.means[-1]
