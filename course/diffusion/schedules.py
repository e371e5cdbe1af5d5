"""Noise schedules: how much noise each forward step adds.

A schedule is a 1-D tensor of betas, ``betas[t]`` being the variance added at step t
(t = 0 .. T-1, zero-based like diffusers). Everything else follows from it:

    alpha_t     = 1 - beta_t
    alpha_bar_t = alpha_0 * alpha_1 * ... * alpha_t        (signal kept after t+1 steps)
    SNR(t)      = alpha_bar_t / (1 - alpha_bar_t)           (signal-to-noise ratio)

Names and values follow diffusers' ``beta_schedule`` argument, so a schedule made here can be
handed to any diffusers scheduler as ``trained_betas``.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def make_beta_schedule(
    name: str, T: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """The betas of a named schedule, float32 [T].

    - ``linear`` (DDPM, Ho et al. 2020): betas evenly spaced from beta_start to beta_end.
    - ``scaled_linear`` (Stable Diffusion): evenly spaced in sqrt(beta), then squared.
    - ``squaredcos_cap_v2`` (Nichol & Dhariwal 2021): alpha_bar follows a squared cosine.
    """
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if name == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if name == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    if name == "squaredcos_cap_v2":
        return cosine_betas(T)
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """The cosine schedule, float32 [T].

        f(u)   = cos^2( (u + s) / (1 + s) * pi / 2 ),   u = t / T in [0, 1]
        beta_t = min(1 - f((t + 1) / T) / f(t / T), max_beta)

    The offset ``s`` keeps beta_0 from being vanishingly small; the cap keeps the last steps
    from being singular, where f((t+1)/T) reaches 0.
    """

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f((t + 1) / T) / f(t / T), max_beta) for t in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def alpha_bars(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), same shape as ``betas`` [T]."""
    return torch.cumprod(1.0 - betas, dim=0)


def snr(betas: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), [T]."""
    alpha_bar = alpha_bars(betas)
    return alpha_bar / (1.0 - alpha_bar)
