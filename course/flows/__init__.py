"""Flow matching on a 2-D toy world (lesson 08): data, an exact velocity field, tiny models
trained with the flow and the epsilon objectives, and their samplers."""

from .toy2d import GaussianMixture2D, eight_gaussians, marginal_velocity
from .toy_sampling import (
    ddim_trajectory,
    ddpm_trajectory,
    euler_trajectory,
    ode_trajectory,
    straightness,
    velocity_of,
)
from .toy_training import TinyMLP, ToyRun, train_epsilon, train_flow

__all__ = [
    "GaussianMixture2D",
    "TinyMLP",
    "ToyRun",
    "ddim_trajectory",
    "ddpm_trajectory",
    "eight_gaussians",
    "euler_trajectory",
    "marginal_velocity",
    "ode_trajectory",
    "straightness",
    "train_epsilon",
    "train_flow",
    "velocity_of",
]
