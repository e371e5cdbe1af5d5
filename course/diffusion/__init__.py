"""The maths of diffusion, one equation per function, each next to the line that computes it."""

from .flow import (
    eps_from_velocity,
    euler_flow_step,
    flow_sigmas,
    interpolate,
    logit_normal_sigmas,
    score_from_velocity,
    shift_sigmas,
    velocity_target,
    x0_from_velocity,
)
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
    "eps_from_velocity",
    "euler_flow_step",
    "flow_sigmas",
    "forward_diffusion",
    "interpolate",
    "logit_normal_sigmas",
    "make_beta_schedule",
    "noising_step",
    "predict_x0",
    "preset_schedule",
    "score_from_velocity",
    "shift_sigmas",
    "snr",
    "velocity_target",
    "x0_from_velocity",
]
