"""Samplers for the 2-D toy that keep every state, so paths can be drawn and measured.

Every sampler starts from the same noise x1 [N, 2] and returns a trajectory [K + 1, N, 2]: the
start, then the state after each of its K steps. The flow is integrated with Euler
(``course.diffusion.euler_flow_step``) or, as a reference for "the exact ODE solution", with
classical Runge-Kutta 4; the epsilon model goes through diffusers' own ``DDPMScheduler`` and
``DDIMScheduler``, the classes every pipeline uses, now that lessons 02 and 03 wrote their steps
by hand.

A velocity is a callable ``velocity(x [N, 2], sigma: float) -> [N, 2]``: ``velocity_of(model)``
for a trained ``TinyMLP``, or ``lambda x, s: marginal_velocity(x, s, mixture)`` for the exact
field.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from ..diffusion import euler_flow_step

Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def velocity_of(model: torch.nn.Module) -> Velocity:
    """A flow model as a velocity callable, evaluated without gradients."""

    @torch.no_grad()
    def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return model(x, float(sigma))

    return velocity


def uniform_sigmas(steps: int) -> torch.Tensor:
    """sigma = 1, 1 - 1/steps, ..., 0: [steps + 1] evenly spaced steps.

    Not ``course.diffusion.flow_sigmas``: diffusers' schedule always spends its last step between
    sigma_min = 0.001 and 0, so its 2 steps are really 1, which would blur the step-count
    comparison this toy is for.
    """
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


@torch.no_grad()
def euler_trajectory(velocity: Velocity, x1: torch.Tensor, steps: int,
                     sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """Euler on dx/dsigma = v from sigma = 1 to 0: [steps + 1, N, 2].

    ``sigmas`` [steps + 1] (decreasing, from 1 to 0) defaults to ``uniform_sigmas(steps)``.
    """
    sigmas = uniform_sigmas(steps) if sigmas is None else sigmas
    states = [x1]
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        # x <- x + (sigma_next - sigma) v(x, sigma)
        states.append(euler_flow_step(states[-1], velocity(states[-1], sigma), sigma, sigma_next))
    return torch.stack(states)


@torch.no_grad()
def ode_trajectory(velocity: Velocity, x1: torch.Tensor, steps: int = 200) -> torch.Tensor:
    """Classical Runge-Kutta 4 on dx/dsigma = v from sigma = 1 to 0: [steps + 1, N, 2].

    Its error falls as h^4 against Euler's h, so 200 steps stand for the exact solution of the
    ODE (on the eight-Gaussian field, 200 and 400 steps end within 1e-4 of each other).
    """
    sigmas = uniform_sigmas(steps).tolist()
    states = [x1]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x, h = states[-1], sigma_next - sigma
        k1 = velocity(x, sigma)
        k2 = velocity(x + h / 2 * k1, sigma + h / 2)
        k3 = velocity(x + h / 2 * k2, sigma + h / 2)
        k4 = velocity(x + h * k3, sigma_next)
        # x <- x + h / 6 (k1 + 2 k2 + 2 k3 + k4)
        states.append(x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
    return torch.stack(states)


@torch.no_grad()
def _scheduler_trajectory(scheduler, eps_model, xT: torch.Tensor, steps: int,
                          generator: torch.Generator | None) -> torch.Tensor:
    """The loop of every diffusers pipeline, keeping each x_t: [steps + 1, N, 2]."""
    scheduler.set_timesteps(steps)
    T = scheduler.config.num_train_timesteps
    states = [xT]
    for t in scheduler.timesteps:
        eps = eps_model(states[-1], float(t) / T)  # the model learnt its time as t / T
        kwargs = {"generator": generator} if isinstance(scheduler, DDPMScheduler) else {}
        states.append(scheduler.step(eps, t, states[-1], **kwargs).prev_sample)
    return torch.stack(states)


def ddpm_trajectory(eps_model, betas: torch.Tensor, xT: torch.Tensor, generator: torch.Generator,
                    steps: int | None = None) -> torch.Tensor:
    """Ancestral DDPM with diffusers' ``DDPMScheduler``: [steps + 1, N, 2], all T steps by default.

    ``clip_sample=False``: the scheduler's default clips its x0 estimate to [-1, 1], made for
    images, which would fold this toy's circle of radius 2 onto a square. The noise each step adds
    comes from ``generator``.
    """
    scheduler = DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist(),
                              clip_sample=False)
    return _scheduler_trajectory(scheduler, eps_model, xT, steps or len(betas), generator)


def ddim_trajectory(eps_model, betas: torch.Tensor, xT: torch.Tensor,
                    steps: int = 50) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) with diffusers' ``DDIMScheduler``: [steps + 1, N, 2].

    ``clip_sample=False`` as for DDPM, and ``timestep_spacing="trailing"`` so that the first step
    starts at t = T - 1, where x_T really is pure noise (the default "leading" spacing starts 10
    steps of 1000 at t = 900).
    """
    scheduler = DDIMScheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist(),
                              clip_sample=False, timestep_spacing="trailing")
    return _scheduler_trajectory(scheduler, eps_model, xT, steps, None)


def straightness(trajectory: torch.Tensor) -> torch.Tensor:
    """|x_end - x_start| / path length for each point of a trajectory [K + 1, N, 2]: [N].

    1 for a straight path walked in one direction, smaller the more the path bends or wanders.
    """
    length = (trajectory[1:] - trajectory[:-1]).norm(dim=-1).sum(dim=0)
    # straightness = |x_K - x_0| / sum_k |x_{k+1} - x_k|
    return (trajectory[-1] - trajectory[0]).norm(dim=-1) / length
