"""The maths of diffusion, one equation per function, each next to the line that computes it."""

from .forward import forward_diffusion, noising_step
from .reverse import ddim_step, ddpm_step, predict_x0
from .schedules import SCHEDULES, alpha_bars, cosine_betas, make_beta_schedule, snr

__all__ = [
    "SCHEDULES",
    "alpha_bars",
    "cosine_betas",
    "ddim_step",
    "ddpm_step",
    "forward_diffusion",
    "make_beta_schedule",
    "noising_step",
    "predict_x0",
    "snr",
]
