"""Exponential moving average of weights: averaged weights sample cleaner images than the last
step's, which carry the noise of the last few batches.

    ema <- decay * ema + (1 - decay) * theta        after every optimizer step
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def ema_update(averaged: list[torch.Tensor], params: Iterable[torch.Tensor],
               decay: float) -> None:
    """ema = decay * ema + (1 - decay) * param, for all tensors in one fused call."""
    with torch.no_grad():
        torch._foreach_lerp_(averaged, [p.detach() for p in params], 1 - decay)


def warmed_decay(decay: float, step: int) -> float:
    """The decay at ``step`` (from 1): min(decay, (1 + step) / (10 + step)), so that early on the
    average forgets the random start quickly."""
    return min(decay, (1 + step) / (10 + step))


def load_averaged(networks: list[torch.nn.Module], averaged: list[torch.Tensor]) -> None:
    """Copy the averaged tensors into the parameters of ``networks``, in parameter order."""
    own = [p for network in networks for p in network.parameters()]
    with torch.no_grad():
        for p, value in zip(own, averaged):
            p.copy_(value)
