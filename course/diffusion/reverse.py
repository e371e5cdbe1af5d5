"""The reverse process: one denoising step of DDPM and of DDIM.

Both start from the model's noise estimate eps = eps_theta(x_t, t) and the estimate of the clean
image it implies (invert the forward jump x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, a = alpha_bar):

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t)

DDPM (Ho et al. 2020, eq. 11) then samples the Gaussian posterior q(x_{t-1} | x_t, x0_hat);
DDIM (Song et al. 2021, eq. 12) moves deterministically (eta = 0) to the noise level of any
earlier step, which is why it can skip steps.
"""

from __future__ import annotations

import torch

from .broadcast import per_image
from .schedules import alpha_bars


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), shaped like x_t."""
    alpha_bar_t = per_image(alpha_bar_t, x_t)
    return (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()


def ddpm_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    betas: torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One ancestral DDPM step x_t -> x_{t-1}, for a batch [B, C, H, W] at a shared timestep t.

        mean          = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t)
        beta_tilde_t  = beta_t * (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)      ("fixed_small")
        x_{t-1}       = mean + sqrt(beta_tilde_t) * z,   z ~ N(0, I),  and no noise at t = 0

    ``noise`` supplies z (shaped like x_t); it is drawn with ``generator`` when None.
    """
    t = int(t)
    if not 0 <= t < len(betas):
        raise ValueError(f"t must lie in [0, {len(betas)}), got {t}")
    # A 1000-long cumulative product costs microseconds next to a model call; recomputing it keeps
    # the step a pure function of its arguments (and in float64, unlike a cached float32 copy).
    alpha_bar = alpha_bars(betas.double())
    beta_t = float(betas[t])
    alpha_bar_t = float(alpha_bar[t])
    alpha_bar_prev = float(alpha_bar[t - 1]) if t > 0 else 1.0

    # mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(1 - beta_t)
    mean = (x_t - beta_t / (1 - alpha_bar_t) ** 0.5 * eps) / (1 - beta_t) ** 0.5
    if t == 0:
        return mean
    if noise is None:
        noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype).to(x_t.device)
    # beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
    beta_tilde = beta_t * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    return mean + beta_tilde**0.5 * noise


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar_t,
    alpha_bar_prev,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One DDIM step from noise level alpha_bar_t to alpha_bar_prev (any earlier step).

        x0_hat  = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
        sigma   = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
        x_prev  = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z

    eta = 0 is deterministic DDIM; eta = 1 adds as much noise as DDPM does. ``alpha_bar_t`` and
    ``alpha_bar_prev`` are floats or tensors ([B] for one level per image).
    """
    a_t = per_image(alpha_bar_t, x_t)
    a_prev = per_image(alpha_bar_prev, x_t)
    x0_hat = predict_x0(x_t, eps, a_t)
    # sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    # x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps  (+ sigma z)
    x_prev = a_prev.sqrt() * x0_hat + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
    if eta > 0:
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype).to(x_t.device)
        x_prev = x_prev + sigma * noise
    return x_prev
