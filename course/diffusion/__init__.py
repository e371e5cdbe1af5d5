"""The maths of diffusion, one equation per function, each next to the line that computes it."""

from .forward import forward_diffusion, noising_step
from .guidance import cfg_combine
from .reverse import ddim_step, ddpm_step, predict_x0
from .schedules import (
    SCHEDULE_PRESETS,
    SCHEDULES,
    STABLE_DIFFUSION_BETAS,
    alpha_bars,
    cosine_betas,
    make_beta_schedule,
    preset_schedule,
    snr,
)

__all__ = [
    "SCHEDULES",
    "SCHEDULE_PRESETS",
    "STABLE_DIFFUSION_BETAS",
    "alpha_bars",
    "cfg_combine",
    "cosine_betas",
    "ddim_step",
    "ddpm_step",
    "forward_diffusion",
    "make_beta_schedule",
    "noising_step",
    "predict_x0",
    "preset_schedule",
    "snr",
]
