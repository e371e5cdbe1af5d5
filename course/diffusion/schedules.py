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

#: diffusers' defaults for ``beta_start`` and ``beta_end``: DDPM's endpoints (Ho et al. 2020).
DIFFUSERS_BETA_START, DIFFUSERS_BETA_END = 1e-4, 0.02

#: The endpoints Stable Diffusion (v1 and v2) trains its ``scaled_linear`` schedule with, as its
#: scheduler config on the hub states. They are not diffusers' defaults: pass them explicitly.
STABLE_DIFFUSION_BETAS = {"beta_start": 0.00085, "beta_end": 0.012}

#: The three schedules the lessons compare, each with the endpoints of the model that made it
#: known (DDPM, Stable Diffusion; the cosine has none): label -> make_beta_schedule arguments.
#: A label is what plots and widgets show.
SCHEDULE_PRESETS = {
    "linear (DDPM)": {"name": "linear"},
    "scaled_linear (Stable Diffusion)": {"name": "scaled_linear", **STABLE_DIFFUSION_BETAS},
    "squaredcos_cap_v2 (cosine)": {"name": "squaredcos_cap_v2"},
}


def make_beta_schedule(
    name: str, T: int, beta_start: float | None = None, beta_end: float | None = None
) -> torch.Tensor:
    """The betas of a named schedule, float32 [T]: diffusers' ``beta_schedule``, same values.

    - ``linear`` (DDPM, Ho et al. 2020): betas evenly spaced from beta_start to beta_end.
    - ``scaled_linear`` (Stable Diffusion): evenly spaced in sqrt(beta), then squared.
    - ``squaredcos_cap_v2`` (Nichol & Dhariwal 2021): alpha_bar follows a squared cosine; it has
      no endpoints, so passing beta_start or beta_end raises ValueError.

    ``beta_start`` and ``beta_end`` default, as in diffusers, to DDPM's 1e-4 and 0.02, also for
    ``scaled_linear``. Stable Diffusion's own values are ``STABLE_DIFFUSION_BETAS``:
    ``make_beta_schedule("scaled_linear", 1000, **STABLE_DIFFUSION_BETAS)``.
    """
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    if name == "squaredcos_cap_v2":
        if beta_start is not None or beta_end is not None:
            raise ValueError("squaredcos_cap_v2 is defined by its cosine and has no "
                             "beta_start or beta_end")
        return cosine_betas(T)
    start = DIFFUSERS_BETA_START if beta_start is None else float(beta_start)
    end = DIFFUSERS_BETA_END if beta_end is None else float(beta_end)
    if not 0 < start <= end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {start} and {end}")
    if name == "linear":
        return torch.linspace(start, end, T, dtype=torch.float32)
    # scaled_linear: linear in sqrt(beta), then squared
    return torch.linspace(start**0.5, end**0.5, T, dtype=torch.float32) ** 2


def preset_schedule(label: str, T: int) -> torch.Tensor:
    """The betas [T] of a ``SCHEDULE_PRESETS`` label, e.g. "scaled_linear (Stable Diffusion)"."""
    if label not in SCHEDULE_PRESETS:
        raise ValueError(f"unknown preset {label!r}; choose one of {list(SCHEDULE_PRESETS)}")
    return make_beta_schedule(T=T, **SCHEDULE_PRESETS[label])


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
