"""The 2-D flow-matching toy: data, exact field, training, samplers, straightness.

Oracles: the mixture's log-density from ``torch.distributions`` (its score must be the score
the exact velocity implies), diffusers' ``DDPMScheduler``/``DDIMScheduler`` inside the samplers,
and the data themselves (samples must land on the mixture).
"""

import math

import pytest
import torch

from course.diffusion import score_from_velocity
from course.flows import (
    TinyMLP,
    ddim_trajectory,
    ddpm_trajectory,
    eight_gaussians,
    euler_trajectory,
    marginal_velocity,
    ode_trajectory,
    straightness,
    train_epsilon,
    train_flow,
    velocity_of,
)

DATA = eight_gaussians()
#: Mean distance to the nearest centre below which samples count as "on the data". Points of the
#: mixture itself sit at std * sqrt(pi / 2) = 0.188; Gaussian noise at 0.95. Measured on 1000
#: start points: the trained flow (Euler, 32 steps) 0.194, the epsilon model with DDIM (50 steps)
#: 0.29 and with DDPM (200 steps) 0.28, an untrained network 0.95, the flow run backwards 1.8.
ON_DATA = 0.35


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def runs():
    return train_flow(DATA, _gen(0)), train_epsilon(DATA, _gen(0))


@pytest.fixture(scope="module")
def x1():
    return torch.randn(1000, 2, generator=_gen(1))


def test_the_mixture_samples_deterministically_and_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    a, b = DATA.sample(500, _gen(3)), DATA.sample(500, _gen(3))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, b) and not torch.equal(a, DATA.sample(500, _gen(4)))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    distance = DATA.nearest_centre_distance(DATA.sample(20_000, _gen(5))).mean().item()
    assert distance == pytest.approx(DATA.std * math.sqrt(math.pi / 2), rel=0.03)


def _mixture_log_density(x, sigma):
    """log p_sigma(x) of x_sigma = (1 - sigma) x0 + sigma eps, x0 from DATA, built by torch."""
    scale = math.sqrt((1 - sigma) ** 2 * DATA.std**2 + sigma**2)
    components = torch.distributions.Independent(
        torch.distributions.Normal((1 - sigma) * DATA.centres.double(), scale), 1)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(DATA.weights.double()), components)
    return mixture.log_prob(x)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 0.6, 0.95])
def test_the_exact_velocity_implies_the_mixtures_score(sigma):
    x = torch.randn(300, 2, generator=_gen(6)).double() * 2
    xg = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(_mixture_log_density(xg, sigma).sum(), xg)
    v = marginal_velocity(x, sigma, DATA)
    torch.testing.assert_close(score_from_velocity(x, v, sigma), score)


def test_the_exact_velocity_at_pure_noise_points_away_from_the_data_mean():
    """At sigma = 1, x is the noise itself and E[x0 | x] is the data mean (0): v = x - 0."""
    x = torch.randn(50, 2, generator=_gen(7))
    torch.testing.assert_close(marginal_velocity(x, 1.0, DATA), x)


def test_one_sigma_per_point_is_each_point_at_its_own_sigma():
    x = torch.randn(5, 2, generator=_gen(8))
    sigmas = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0])
    batched = marginal_velocity(x, sigmas, DATA)
    for i, s in enumerate(sigmas.tolist()):
        torch.testing.assert_close(batched[i], marginal_velocity(x[i : i + 1], s, DATA)[0])


def test_the_exact_ode_carries_noise_onto_the_data_and_euler_converges_at_first_order(x1):
    exact = lambda x, s: marginal_velocity(x, s, DATA)  # noqa: E731
    reference = ode_trajectory(exact, x1, 200)
    assert torch.equal(reference[0], x1) and reference.shape == (201, 1000, 2)
    finer = ode_trajectory(exact, x1[:100], 400)
    assert (finer[-1] - reference[-1, :100]).norm(dim=-1).max() < 1e-4  # RK4 has converged
    on_data = DATA.nearest_centre_distance(reference[-1]).mean().item()
    assert on_data == pytest.approx(DATA.std * math.sqrt(math.pi / 2), rel=0.05)
    # each of the eight modes receives about an eighth of the points
    nearest = torch.cdist(reference[-1].float(), DATA.centres).argmin(dim=1)
    assert torch.bincount(nearest, minlength=8).min() > 1000 / 8 * 0.7
    errors = [(euler_trajectory(exact, x1, n)[-1] - reference[-1]).norm(dim=-1).mean().item()
              for n in (8, 16, 32, 64)]
    for coarse, fine in zip(errors, errors[1:]):
        assert 1.7 < coarse / fine < 2.3  # doubling the steps halves the error
    # one step from pure noise lands every point on E[x0] = the data mean
    one = euler_trajectory(exact, x1, 1)
    assert one.shape == (2, 1000, 2) and one[-1].abs().max() < 1e-5


def test_training_is_deterministic_and_leaves_the_global_rng_alone():
    for train in (train_flow, train_epsilon):
        before = torch.get_rng_state()
        first, second = train(DATA, _gen(9), steps=30), train(DATA, _gen(9), steps=30)
        assert torch.equal(torch.get_rng_state(), before)
        assert len(first.losses) == 30 and first.losses == second.losses
        for p, q in zip(first.model.parameters(), second.model.parameters()):
            assert torch.equal(p, q)
        other = train(DATA, _gen(10), steps=30).model
        assert not torch.equal(first.model.net[0].weight, other.net[0].weight)


def test_the_network_is_tiny_conditioned_on_time_and_drawn_from_its_generator():
    before = torch.get_rng_state()
    model = TinyMLP(generator=_gen(0))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(model.net[2].weight, TinyMLP(generator=_gen(0)).net[2].weight)
    assert 3_000 < sum(p.numel() for p in model.parameters()) < 6_000
    x = torch.randn(4, 2, generator=_gen(1))
    assert not torch.equal(model(x, 0.1), model(x, 0.9))
    torch.testing.assert_close(model(x, torch.full((4,), 0.3)), model(x, 0.3))


def test_a_trained_flow_lands_on_the_data_and_an_untrained_one_does_not(runs, x1):
    flow, _ = runs
    assert flow.seconds > 0 and flow.losses[-1] < flow.losses[0]
    before = torch.get_rng_state()
    trained = euler_trajectory(velocity_of(flow.model), x1, 32)
    untrained = euler_trajectory(velocity_of(TinyMLP(generator=_gen(0))), x1, 32)
    assert torch.equal(torch.get_rng_state(), before)
    assert DATA.nearest_centre_distance(trained[-1]).mean() < ON_DATA
    assert DATA.nearest_centre_distance(untrained[-1]).mean() > 2 * ON_DATA


def test_the_epsilon_model_samples_the_data_through_diffusers_schedulers(runs, x1):
    _, eps = runs
    start = x1[:400]
    ddim = ddim_trajectory(eps.model, eps.betas, start, steps=50)
    assert ddim.shape == (51, 400, 2) and torch.equal(ddim[0], start)
    assert DATA.nearest_centre_distance(ddim[-1]).mean() < ON_DATA
    assert torch.equal(ddim, ddim_trajectory(eps.model, eps.betas, start, steps=50))

    before = torch.get_rng_state()
    ddpm = ddpm_trajectory(eps.model, eps.betas, start, _gen(2), steps=200)
    assert torch.equal(torch.get_rng_state(), before)
    assert ddpm.shape == (201, 400, 2)
    assert torch.equal(ddpm, ddpm_trajectory(eps.model, eps.betas, start, _gen(2), steps=200))
    assert not torch.equal(ddpm, ddpm_trajectory(eps.model, eps.betas, start, _gen(3), steps=200))
    assert DATA.nearest_centre_distance(ddpm[-1]).mean() < ON_DATA


def test_a_flow_model_run_the_other_convention_s_way_walks_away_from_the_data(runs, x1):
    """A diffusers-convention model in a t = 1-is-data loop (Lipman et al., the MIT notes) raises
    no error; it only sends the samples away from the data."""
    flow, _ = runs
    model = velocity_of(flow.model)
    # t = 1 - sigma runs from 0 up to 1, and x <- x + dt * model(x, t): in sigma, the velocity
    # dx/dsigma = -model(x, 1 - sigma)
    backwards = euler_trajectory(lambda x, s: -model(x, 1 - s), x1, 32)
    assert DATA.nearest_centre_distance(backwards[-1]).mean() > 2 * ON_DATA
    # the right time but the wrong sign (a target of x0 - eps) fails as badly
    wrong_sign = euler_trajectory(lambda x, s: -model(x, s), x1, 32)
    assert DATA.nearest_centre_distance(wrong_sign[-1]).mean() > 2 * ON_DATA


def test_straightness():
    line = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[3.0, 0.0]]])  # [3, 1, 2]
    assert straightness(line).tolist() == [1.0]
    corner = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]]])
    assert straightness(corner).item() == pytest.approx(math.sqrt(2) / 2)
    there_and_back = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]], [[1.0, 0.0]]])
    assert straightness(there_and_back).item() == pytest.approx(1 / 3)
