"""The time limit of a training run, agreed on by all processes: under ``accelerate launch`` every
process must stop at the same step, or DistributedDataParallel would wait forever for the one
that stopped alone."""

from __future__ import annotations

import time

import torch


class Clock:
    """Training time since construction, checked against ``limit`` seconds (None: no limit)
    every ``every`` steps; each check synchronises the device and the processes."""

    def __init__(self, accelerator, limit: float | None, every: int = 1):
        self.accelerator, self.limit, self.every = accelerator, limit, every
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def over(self, step: int) -> bool:
        """Whether any process has run past the limit (checked at steps divisible by
        ``every``)."""
        if self.limit is None or step % self.every:
            return False
        late = torch.tensor(float(self.seconds > self.limit), device=self.accelerator.device)
        return self.accelerator.reduce(late, "max").item() > 0


def batches(loader):
    """The loader, epoch after epoch, for a loop counted in steps."""
    while True:
        yield from loader
