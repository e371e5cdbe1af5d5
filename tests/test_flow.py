"""Flow matching in diffusers' convention: each function against diffusers' own code.

Oracles: ``FlowMatchEulerDiscreteScheduler`` (``scale_noise``, ``set_timesteps``, ``step``, its
stochastic ``step``, ``time_shift``) in
diffusers/schedulers/scheduling_flow_match_euler_discrete.py, and
``compute_density_for_timestep_sampling`` in diffusers/training_utils.py. The conversions are
checked on a Gaussian, whose score and velocity are known in closed form.
"""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import (
    compute_density_for_timestep_sampling,
    compute_loss_weighting_for_sd3,
)

from course.diffusion import (
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


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_interpolate_is_the_schedulers_scale_noise_with_one_sigma_per_image():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(10)
    x0, noise = _randn(4, 3, 8, 8, seed=1), _randn(4, 3, 8, 8, seed=2)
    timesteps = scheduler.timesteps[[0, 3, 6, 9]]
    expected = scheduler.scale_noise(x0, timesteps, noise)
    sigmas = scheduler.sigmas[[0, 3, 6, 9]]
    torch.testing.assert_close(interpolate(x0, noise, sigmas), expected)
    assert torch.equal(interpolate(x0, noise, 0.0), x0)  # sigma = 0 is the data
    assert torch.equal(interpolate(x0, noise, 1.0), noise)  # sigma = 1 is pure noise


def test_velocity_target_is_the_derivative_of_the_path_in_sigma():
    x0, noise = _randn(2, 3, 4, 4, seed=3), _randn(2, 3, 4, 4, seed=4)
    for value in (0.1, 0.5, 0.9):
        sigma = torch.tensor(value, requires_grad=True)
        _, tangent = torch.autograd.functional.jvp(
            lambda s: interpolate(x0, noise, s), sigma, torch.tensor(1.0))
        torch.testing.assert_close(tangent, velocity_target(x0, noise))
    assert torch.equal(velocity_target(x0, noise), noise - x0)


@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
@pytest.mark.parametrize("steps", [1, 2, 7, 28, 50])
def test_flow_sigmas_are_the_schedulers(steps, shift):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    ours = flow_sigmas(steps, shift)
    assert ours.shape == (steps + 1,) and ours[-1] == 0
    torch.testing.assert_close(ours.float(), scheduler.sigmas, atol=1e-6, rtol=0)


def test_the_schedulers_last_step_starts_at_its_smallest_sigma_shifted_twice():
    """A surprise of diffusers' schedule, pinned down: 2 steps are 1 -> sigma_min -> 0."""
    for shift in (1.0, 3.0):
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(2)
        twice = shift_sigmas(shift_sigmas(1e-3, shift), shift)
        assert scheduler.sigmas[1].item() == pytest.approx(float(twice), rel=1e-5)


def test_shift_sigmas_is_the_schedulers_shift_and_both_time_shifts():
    sigmas = torch.linspace(0.02, 1.0, 50, dtype=torch.float64)
    for shift in (0.5, 1.0, 3.0, 6.0):
        custom = FlowMatchEulerDiscreteScheduler(shift=shift)
        custom.set_timesteps(sigmas=sigmas.tolist())  # the scheduler shifts sigmas it is given
        torch.testing.assert_close(shift_sigmas(sigmas, shift).float(), custom.sigmas[:-1])
        linear = FlowMatchEulerDiscreteScheduler(time_shift_type="linear")
        exponential = FlowMatchEulerDiscreteScheduler(time_shift_type="exponential")
        torch.testing.assert_close(shift_sigmas(sigmas, shift),
                                   linear.time_shift(shift, 1.0, sigmas))
        torch.testing.assert_close(shift_sigmas(sigmas, shift),
                                   exponential.time_shift(math.log(shift), 1.0, sigmas))
    assert shift_sigmas(torch.tensor([0.0, 1.0]), 3.0).tolist() == [0.0, 1.0]
    assert shift_sigmas(torch.tensor([0.5]), 3.0).dtype == torch.float32


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_flow_step_is_the_schedulers_step(shift):
    steps = 6
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    sigmas = flow_sigmas(steps, shift)
    x_ref = x_ours = _randn(2, 4, 8, 8, seed=5)
    for i, t in enumerate(scheduler.timesteps):
        v = _randn(2, 4, 8, 8, seed=10 + i) + 0.1 * x_ref  # a model output that depends on x
        x_ref = scheduler.step(v, t, x_ref).prev_sample
        x_ours = euler_flow_step(x_ours, v, float(sigmas[i]), float(sigmas[i + 1]))
        torch.testing.assert_close(x_ours, x_ref, atol=1e-5, rtol=1e-5)


def test_euler_flow_step_takes_one_sigma_per_image():
    x, v = _randn(3, 2, seed=6), _randn(3, 2, seed=7)
    sigma, sigma_next = torch.tensor([1.0, 0.5, 0.2]), torch.tensor([0.5, 0.2, 0.0])
    out = euler_flow_step(x, v, sigma, sigma_next)
    for i in range(3):
        torch.testing.assert_close(out[i], x[i] + (sigma_next[i] - sigma[i]) * v[i])


def test_x0_from_velocity_is_the_stochastic_schedulers_data_estimate():
    """With ``stochastic_sampling`` the scheduler jumps to x0_hat = x - sigma v and re-noises it
    to the next sigma: the same as x0_from_velocity, then interpolate with the same noise."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=True)
    scheduler.set_timesteps(5)
    x, v = _randn(2, 4, 8, 8, seed=8), _randn(2, 4, 8, 8, seed=9)
    t = scheduler.timesteps[0]
    torch.manual_seed(11)  # diffusers < 0.37 draws this noise from the global generator
    expected = scheduler.step(v, t, x, generator=torch.Generator().manual_seed(11)).prev_sample
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(11))
    sigma, sigma_next = scheduler.sigmas[0], scheduler.sigmas[1]
    ours = interpolate(x0_from_velocity(x, v, sigma), noise, sigma_next)
    torch.testing.assert_close(ours, expected)


def test_conversions_recover_what_made_x():
    x0, noise = _randn(4, 3, 4, 4, seed=12), _randn(4, 3, 4, 4, seed=13)
    sigma = torch.tensor([0.05, 0.3, 0.7, 0.99])
    x, v = interpolate(x0, noise, sigma), velocity_target(x0, noise)
    torch.testing.assert_close(x0_from_velocity(x, v, sigma), x0)
    torch.testing.assert_close(eps_from_velocity(x, v, sigma), noise)
    torch.testing.assert_close(score_from_velocity(x, v, sigma),
                               -noise / sigma.view(-1, 1, 1, 1))


def test_score_from_the_exact_velocity_of_a_gaussian_is_its_score():
    """Data x0 ~ N(mu, c^2 I). Then x_sigma ~ N((1 - sigma) mu, ((1 - sigma)^2 c^2 + sigma^2) I),
    whose score autograd computes from its log-density; the exact (marginal) velocity
    E[eps - x0 | x] comes from the joint Gaussian of (x0, eps, x)."""
    mu, c = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.4
    x = _randn(64, 2, seed=14).double() * 1.5
    for sigma in (0.1, 0.5, 0.9):
        var = (1 - sigma) ** 2 * c**2 + sigma**2
        centred = x - (1 - sigma) * mu
        # E[x0 | x] = mu + Cov(x0, x) / var * (x - E x),  Cov(x0, x) = (1 - sigma) c^2
        # E[eps | x] = Cov(eps, x) / var * (x - E x),      Cov(eps, x) = sigma
        v = sigma / var * centred - (mu + (1 - sigma) * c**2 / var * centred)
        xg = x.clone().requires_grad_(True)
        density = torch.distributions.Normal((1 - sigma) * mu, math.sqrt(var))
        (score,) = torch.autograd.grad(density.log_prob(xg).sum(), xg)
        torch.testing.assert_close(score_from_velocity(x, v, sigma), score)
        # and the velocity's x0 estimate is Tweedie's posterior mean
        torch.testing.assert_close(x0_from_velocity(x, v, sigma),
                                   mu + (1 - sigma) * c**2 / var * centred)


def test_logit_normal_sigmas_follow_diffusers_density_and_leave_the_global_rng_alone():
    n = 200_000
    quantiles = torch.tensor([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99], dtype=torch.float64)
    for mean, std in ((0.0, 1.0), (0.5, 0.8)):
        before = torch.get_rng_state()
        ours = logit_normal_sigmas(n, mean, std, generator=torch.Generator().manual_seed(0))
        assert torch.equal(torch.get_rng_state(), before)
        theirs = compute_density_for_timestep_sampling(
            "logit_normal", n, logit_mean=mean, logit_std=std,
            generator=torch.Generator().manual_seed(1))
        # the q-quantile of sigmoid(N(m, s^2)) is sigmoid(m + s * Phi^-1(q))
        exact = torch.sigmoid(mean + std * torch.special.ndtri(quantiles))
        for draws in (ours, theirs):
            torch.testing.assert_close(torch.quantile(draws.double(), quantiles), exact,
                                       atol=4e-3, rtol=0)
    same = logit_normal_sigmas(8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(same, logit_normal_sigmas(8, generator=torch.Generator().manual_seed(3)))
    assert ours.dtype == torch.float32 and 0 < ours.min() and ours.max() < 1


def test_diffusers_scripts_index_descending_timesteps_so_their_logit_mean_is_mirrored():
    """The SD3 and FLUX scripts map u to ``scheduler.timesteps[(u * T).long()]``: a positive
    logit_mean there means less noise, the opposite of sigma = sigmoid(u)."""
    scheduler = FlowMatchEulerDiscreteScheduler()  # shift 1: sigmas are timesteps / 1000
    u = compute_density_for_timestep_sampling("logit_normal", 50_000, logit_mean=1.0,
                                              logit_std=1.0,
                                              generator=torch.Generator().manual_seed(0))
    script_sigmas = scheduler.sigmas[(u * scheduler.config.num_train_timesteps).long()]
    assert script_sigmas.median().item() == pytest.approx(1 - math.e / (1 + math.e), abs=0.01)
    ours = logit_normal_sigmas(50_000, mean=1.0, generator=torch.Generator().manual_seed(0))
    assert ours.median().item() == pytest.approx(math.e / (1 + math.e), abs=0.01)


def test_the_logit_normal_scheme_weights_every_draw_the_same():
    """SD3's logit-normal is a sampling density, not a loss weight (the claim of the docstring of
    ``logit_normal_sigmas``); only "sigma_sqrt" and "cosmap" weight the loss."""
    sigmas = logit_normal_sigmas(16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(compute_loss_weighting_for_sd3("logit_normal", sigmas), torch.ones(16))
    torch.testing.assert_close(compute_loss_weighting_for_sd3("sigma_sqrt", sigmas), sigmas**-2)
