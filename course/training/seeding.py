"""Seeded training that leaves the caller's random state alone.

A recipe's ``seed`` decides its model's initial weights (drawn from torch's global generator, as
``nn.Module`` constructors do) and every other draw the run makes without a generator of its own.
``seeded`` gives the run that state and hands the caller's back afterwards, so that training in a
notebook does not change what the learner's next cell draws.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu"):
    """Inside: torch's CPU generator (and, on a CUDA ``device``, that device's generator) seeded
    with ``seed``, as ``torch.manual_seed(seed)`` would; outside: the caller's states, restored."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield
