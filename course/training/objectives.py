"""What stage 2 of the tiny pipeline learns, and the sampler that undoes it: ``OBJECTIVES``, picked
by ``TinySDRecipe.objective``.

- "v-prediction" (tiny-shapes): the DDPM forward process on the zero-terminal-SNR schedule of
  ``course.tinysd.model``, t ~ U{0..T-1}, target v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t)
  z0; sampled with DDIM.
- "flow" (tiny-shapes-flow): flow matching on the straight path of ``course.diffusion.flow``,
  z_sigma = (1 - sigma) z0 + sigma eps, target v = eps - z0, sigma drawn logit-normal (SD3) or
  uniform; sampled with ``FlowMatchEulerDiscreteScheduler``.

Both are called the same way, ``loss = objective(unet, z0, states, generator)``, with latents
z0 [B, 4, h, w], text states [B, L, width] and the run's noise generator, so the two recipes
share everything else: data, networks, optimizer, learning rate, EMA, caption dropout.

The timestep the U-Net sees, for flow. ``FlowMatchEulerDiscreteScheduler`` hands the U-Net its
``timesteps`` = sigmas * num_train_timesteps (1000 at pure noise, 1 at its smallest sigma), and
diffusers' SD3 training script conditions on that same t = 1000 sigma. Training here feeds the
same: a float in (0, 1000), which the U-Net's sinusoidal embedding takes as it is. Conditioning
on sigma itself would train a network that the sampler then asks about times 1000 times larger.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..diffusion.flow import interpolate, logit_normal_sigmas, shift_sigmas, velocity_target
from ..tinysd.model import SCHEDULE, make_flow_scheduler, make_noise_scheduler, make_scheduler

#: t = NUM_TRAIN_TIMESTEPS * sigma is what a flow U-Net is conditioned on
NUM_TRAIN_TIMESTEPS = SCHEDULE["num_train_timesteps"]
TIME_SAMPLINGS = ("uniform", "logit-normal")


class VPrediction:
    """L = || v - v_theta(z_t, t, c) ||^2 on the DDPM schedule, t ~ U{0..T-1} (uniform only)."""

    def __init__(self, time_sampling: str = "uniform", shift: float = 1.0):
        if time_sampling != "uniform" or shift != 1.0:
            raise ValueError("v-prediction draws t ~ U{0..T-1} and has no time shift: "
                             f"got time_sampling={time_sampling!r}, shift={shift}")
        self.noise_scheduler = make_noise_scheduler()

    def __call__(self, unet, z0: torch.Tensor, states: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(z0),),
                          generator=generator, device=z0.device)
        z_t = self.noise_scheduler.add_noise(z0, noise, t)
        v = self.noise_scheduler.get_velocity(z0, noise, t)  # sqrt(a) eps - sqrt(1 - a) z0
        return F.mse_loss(unet(z_t, t, encoder_hidden_states=states).sample, v)

    def sampler(self):
        return make_scheduler("ddim")


class FlowMatching:
    """L = || (eps - z0) - v_theta(z_sigma, 1000 sigma, c) ||^2, z_sigma = (1 - sigma) z0 + sigma
    eps, with sigma ~ logit-normal (sigmoid of N(0, 1), SD3's default) or U(0, 1), then shifted by
    ``shift`` (SD3's sigma -> shift sigma / (1 + (shift - 1) sigma); 1: unchanged), as the
    sampler's steps are."""

    def __init__(self, time_sampling: str = "logit-normal", shift: float = 1.0):
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, "
                             f"got {time_sampling!r}")
        if not shift > 0:
            raise ValueError(f"shift must be positive, got {shift}")
        self.time_sampling, self.shift = time_sampling, shift

    def sigmas(self, n: int, generator: torch.Generator, device) -> torch.Tensor:
        """n training noise levels [n] in (0, 1), float32, on ``device``."""
        if self.time_sampling == "uniform":
            sigma = torch.rand(n, generator=generator, device=device)
        else:
            sigma = logit_normal_sigmas(n, generator=generator, device=device)
        return shift_sigmas(sigma, self.shift)

    def __call__(self, unet, z0: torch.Tensor, states: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        sigma = self.sigmas(len(z0), generator, z0.device)  # [B]
        z_sigma = interpolate(z0, noise, sigma)  # (1 - sigma) z0 + sigma eps
        v = velocity_target(z0, noise)  # eps - z0
        t = sigma * NUM_TRAIN_TIMESTEPS  # the scheduler's timesteps during sampling
        return F.mse_loss(unet(z_sigma, t, encoder_hidden_states=states).sample, v)

    def sampler(self):
        return make_flow_scheduler(self.shift)


OBJECTIVES = {"v-prediction": VPrediction, "flow": FlowMatching}


def make_objective(recipe):
    """The loss (and sampler) of a ``TinySDRecipe``: its ``objective``, ``time_sampling`` and
    ``flow_shift``."""
    if recipe.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, "
                         f"got {recipe.objective!r}")
    return OBJECTIVES[recipe.objective](recipe.time_sampling, recipe.flow_shift)
