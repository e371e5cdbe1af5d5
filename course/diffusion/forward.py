"""The forward process: how an image is turned into noise.

One step (Ho et al. 2020, eq. 2):

    x_t = sqrt(1 - beta_t) * x_{t-1} + sqrt(beta_t) * eps,        eps ~ N(0, I)

Chaining steps collapses into one jump from x_0 (eq. 4), because a sum of independent
Gaussians is Gaussian and the variances add up:

    x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps
"""

from __future__ import annotations

import torch

from .broadcast import per_image
from .schedules import alpha_bars


def noising_step(x_prev: torch.Tensor, beta: float, noise: torch.Tensor) -> torch.Tensor:
    """One forward step x_{t-1} -> x_t; every argument broadcasts (scalars, pixels or images)."""
    beta = torch.as_tensor(beta, dtype=x_prev.dtype)
    # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps
    return torch.sqrt(1 - beta) * x_prev + torch.sqrt(beta) * noise


def _check_timesteps(t: int | torch.Tensor, T: int, batch: int | None) -> torch.Tensor:
    """Validate t and return it as a LongTensor: 0-d for a shared t, [B] for one per image."""
    if isinstance(t, bool) or not isinstance(t, (int, torch.Tensor)):
        raise TypeError(f"t must be an int or a LongTensor, got {type(t).__name__}")
    t = torch.as_tensor(t)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"t must hold integers, got dtype {t.dtype}")
    if t.ndim > 1:
        raise ValueError(f"t must be an int or a 1-D tensor [B], got shape {list(t.shape)}")
    if t.ndim == 1 and batch is not None and t.shape[0] != batch:
        raise ValueError(f"t has {t.shape[0]} timesteps but x0 has a batch of {batch}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(f"t must lie in [0, {T}) for a schedule of T={T} steps, got {t.tolist()}")
    return t.long()


def forward_diffusion(
    x0: torch.Tensor,
    t: int | torch.Tensor,
    betas: torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample x_t ~ q(x_t | x_0) in one jump.

    Args:
        x0: clean images [B, C, H, W] (or any shape when t is an int).
        t: an int shared by the batch, or a LongTensor [B] with one timestep per image.
        betas: the schedule [T].
        noise: eps, same shape as x0; drawn from N(0, I) when None.
        generator: makes the drawn noise reproducible.

    Returns:
        (x_t, noise), both shaped like x0. The noise is returned because it is the
        training target of an epsilon-predicting model.
    """
    batch = x0.shape[0] if x0.ndim >= 1 else None
    t = _check_timesteps(t, len(betas), batch)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise has shape {list(noise.shape)}, x0 has {list(x0.shape)}")

    # The cumulative product in float64 on the CPU (MPS has no float64), then onto x0's device.
    alpha_bar_t = per_image(alpha_bars(betas.detach().cpu().double())[t.cpu()], x0)
    # x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
    x_t = alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * noise
    return x_t, noise
