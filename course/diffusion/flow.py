"""Flow matching on the straight path (rectified flow), in diffusers' convention.

The path from an image x0 to Gaussian noise eps is the straight line between them:

    x_sigma = (1 - sigma) * x0 + sigma * eps,        sigma in [0, 1],  eps ~ N(0, I)

sigma = 0 is the data and sigma = 1 is pure noise. A network v_theta(x_sigma, sigma) learns the
velocity of this path, its derivative in sigma,

    v = d x_sigma / d sigma = eps - x0,

and sampling integrates dx/dsigma = v_theta from sigma = 1 down to 0. This is the convention of
diffusers (``FlowMatchEulerDiscreteScheduler``, its SD3 and FLUX training scripts) and of the SD3
paper (Esser et al. 2024, where their t is our sigma).

The other convention
--------------------
Lipman et al. (2022, "Flow Matching for Generative Modeling"), the MIT 6.S184 notes (Holderrieth
and Erives, arXiv 2506.02070) and Meta's ``flow_matching`` library run time the other way: t = 0
is noise and t = 1 is data,

    x_t = t * x1 + (1 - t) * x0,    x0 ~ N(0, I) noise, x1 data,    target u = x1 - x0,

and sampling integrates dx/dt = u_theta from t = 0 up to 1. The two describe the same path:

    t = 1 - sigma,        x1 = our x0 (data),  x0 = our eps (noise),        v_mit = -v_diffusers

Mixing them up raises no error and leaves the training loss looking healthy, because either
target is an equally learnable function. The damage shows only at sampling time: a network
trained on eps - x0 and integrated with a t-up-to-1 loop (or handed t where it learnt sigma)
follows the field backwards, pushing samples away from the data. So the convention of a model
and of its sampler must be read off the code, never assumed.

Shapes: images are [B, ...]; sigma is a float, a 0-d tensor, or [B] (one noise level per image,
broadcast by ``per_image``).
"""

from __future__ import annotations

import torch

from .broadcast import per_image


def interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """x_sigma on the straight path from data x0 (sigma = 0) to noise (sigma = 1).

    x0 and noise are [B, ...]; sigma a float or [B]. This is diffusers'
    ``FlowMatchEulerDiscreteScheduler.scale_noise``.
    """
    sigma = per_image(sigma, x0)
    # x_sigma = sigma * eps + (1 - sigma) * x0
    return sigma * noise + (1 - sigma) * x0


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = eps - x0, the regression target of a flow-matching network, shaped like x0.

    It is d x_sigma / d sigma, the same at every sigma of one (x0, eps) pair: the path is
    straight. (diffusers' SD3 and FLUX scripts: ``target = noise - model_input``.)
    """
    # v = d/dsigma [sigma eps + (1 - sigma) x0] = eps - x0
    return noise - x0


def euler_flow_step(x: torch.Tensor, v: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One Euler step of dx/dsigma = v from sigma to sigma_next (< sigma while sampling).

    x and v are [B, ...]; the sigmas floats or [B]. The step is negative, so x moves along -v,
    towards the data: what ``FlowMatchEulerDiscreteScheduler.step`` computes.
    """
    sigma, sigma_next = per_image(sigma, x), per_image(sigma_next, x)
    # x_next = x + (sigma_next - sigma) * v
    return x + (sigma_next - sigma) * v


def shift_sigmas(sigmas, shift: float) -> torch.Tensor:
    """SD3's time shift: sigma -> shift * sigma / (1 + (shift - 1) * sigma), elementwise.

    ``sigmas``: a float or a tensor of any shape; a float tensor keeps its dtype, anything else
    comes back as float64.

    shift > 1 moves every sigma towards 1 (noisier) and keeps 0 and 1 in place, so a sampler
    spends more of its steps at high noise, where large images decide their layout (SD3 uses 3.0).
    It is the ``linear`` ``time_shift`` of diffusers with mu = shift, and the ``exponential``
    one (FLUX's resolution-dependent shift) with mu = log(shift).
    """
    sigmas = torch.as_tensor(sigmas)
    if not sigmas.is_floating_point():
        sigmas = sigmas.double()
    # sigma' = shift * sigma / (1 + (shift - 1) * sigma)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_sigmas(steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The sigmas [steps + 1] of ``FlowMatchEulerDiscreteScheduler(shift=shift)`` after
    ``set_timesteps(steps)``, float64, from 1 down to the final 0.

    diffusers spaces the steps evenly between sigma_max = 1 and sigma_min, its smallest training
    sigma (1 / num_train_timesteps, already shifted once when the scheduler was built), shifts
    them, and appends 0. Two consequences worth knowing: the last step always runs from
    sigma_min (about 0.001) to 0, so ``steps`` = 2 is one real step and a tiny one; and with
    shift != 1 sigma_min is shifted twice.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    sigma_min = float(shift_sigmas(1.0 / num_train_timesteps, shift))
    # evenly spaced from sigma_max = 1 to sigma_min, then shifted, then the terminal 0
    evenly = torch.linspace(1.0, sigma_min, steps, dtype=torch.float64)
    return torch.cat([shift_sigmas(evenly, shift), torch.zeros(1, dtype=torch.float64)])


def logit_normal_sigmas(n: int, mean: float = 0.0, std: float = 1.0,
                        generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """n training noise levels [n], float32, from SD3's logit-normal density, on ``device``
    (the ``generator``'s device; default the CPU).

        sigma = sigmoid(u),    u ~ N(mean, std^2)

    mean = 0, std = 1 (SD3's choice) puts most draws near sigma = 0.5, where predicting the
    velocity is hardest, and few at the ends, where it is nearly trivial. diffusers' scripts draw
    the same u with ``compute_density_for_timestep_sampling(weighting_scheme="logit_normal")``
    but then index the descending ``scheduler.timesteps`` with it, so their sigma is about
    1 - sigmoid(u) (shifted): the same density when mean = 0, the mirror image otherwise. The
    density is the whole weighting: ``compute_loss_weighting_for_sd3("logit_normal", sigmas)``
    returns ones, every draw counts the same in the loss.
    """
    u = torch.randn(n, generator=generator, device=device) * std + mean
    # sigma = sigmoid(u), u ~ N(mean, std^2)
    return torch.sigmoid(u)


def x0_from_velocity(x: torch.Tensor, v: torch.Tensor, sigma) -> torch.Tensor:
    """The data estimate x0_hat = x - sigma * v, shaped like x.

    From x = (1 - sigma) x0 + sigma eps and v = eps - x0: x - sigma v = x0. (diffusers' SD3
    scripts call this output preconditioning: ``model_pred * (-sigmas) + noisy_model_input``.)
    """
    sigma = per_image(sigma, x)
    # x0 = x - sigma * v
    return x - sigma * v


def eps_from_velocity(x: torch.Tensor, v: torch.Tensor, sigma) -> torch.Tensor:
    """The noise estimate eps_hat = x + (1 - sigma) * v, shaped like x.

    From the same two equations: x + (1 - sigma) v = (1 - sigma) x0 + sigma eps
    + (1 - sigma)(eps - x0) = eps.
    """
    sigma = per_image(sigma, x)
    # eps = x + (1 - sigma) * v
    return x + (1 - sigma) * v


def score_from_velocity(x: torch.Tensor, v: torch.Tensor, sigma) -> torch.Tensor:
    """The score grad_x log p_sigma(x) implied by a velocity, shaped like x (sigma > 0).

    Given x0, x_sigma ~ N((1 - sigma) x0, sigma^2 I), whose score is -(x - (1 - sigma) x0) / sigma^2
    = -eps / sigma. The marginal score is its average over x0 given x (Tweedie), which replaces
    eps by E[eps | x] = eps_hat, the estimate a perfect velocity implies:

        score = -eps_hat / sigma = -(x + (1 - sigma) v) / sigma
    """
    sigma = per_image(sigma, x)
    # score = -eps_hat / sigma, eps_hat = x + (1 - sigma) v
    return -(x + (1 - sigma) * v) / sigma
