import math

import pytest
import torch
from diffusers import DDPMScheduler

from course.diffusion import (
    SCHEDULE_PRESETS,
    SCHEDULES,
    STABLE_DIFFUSION_BETAS,
    alpha_bars,
    cosine_betas,
    forward_diffusion,
    make_beta_schedule,
    noising_step,
    preset_schedule,
    snr,
)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [1, 10, 1000])
def test_schedules_equal_diffusers(name, T):
    expected = DDPMScheduler(num_train_timesteps=T, beta_schedule=name).betas
    got = make_beta_schedule(name, T)
    assert got.dtype == torch.float32 and got.shape == (T,)
    torch.testing.assert_close(got, expected, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("name", ["linear", "scaled_linear"])
@pytest.mark.parametrize("start, end", [(0.00085, 0.012), (1e-3, 1e-3), (1e-5, 0.5)])
def test_schedule_endpoints_equal_diffusers(name, start, end):
    expected = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, beta_start=start,
                             beta_end=end).betas
    got = make_beta_schedule(name, 1000, beta_start=start, beta_end=end)
    torch.testing.assert_close(got, expected, atol=1e-7, rtol=1e-6)


def test_stable_diffusion_schedule_is_scaled_linear_with_its_own_endpoints():
    betas = make_beta_schedule("scaled_linear", 1000, **STABLE_DIFFUSION_BETAS)
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)
    torch.testing.assert_close(preset_schedule("scaled_linear (Stable Diffusion)", 1000), betas)
    # Lin et al. 2023, table 1: SD's schedule leaves sqrt(alpha_bar_T) = 0.068265 of the image.
    leftover = alpha_bars(betas.double())[-1].sqrt().item()
    assert leftover == pytest.approx(0.068265, abs=2e-6)
    # diffusers' defaults are DDPM's endpoints, for every name: not what SD uses.
    assert make_beta_schedule("scaled_linear", 1000)[0].item() == pytest.approx(1e-4)


def test_presets_cover_every_schedule_once():
    assert sorted(p["name"] for p in SCHEDULE_PRESETS.values()) == sorted(SCHEDULES)
    for label, preset in SCHEDULE_PRESETS.items():
        assert label.startswith(preset["name"] + " (")
        assert preset_schedule(label, 10).shape == (10,)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_schedule("scaled_linear", 10)


def test_schedule_rejects_unknown_names_bad_T_and_bad_endpoints():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_beta_schedule("cosine", 10)
    with pytest.raises(ValueError, match="positive int"):
        make_beta_schedule("linear", 0)
    with pytest.raises(ValueError, match="no beta_start or beta_end"):
        make_beta_schedule("squaredcos_cap_v2", 10, beta_end=0.012)
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        make_beta_schedule("linear", 10, beta_start=0.02, beta_end=1e-4)


def test_cosine_betas_are_capped():
    betas = cosine_betas(10, max_beta=0.5)
    assert betas.max() == pytest.approx(0.5)
    assert (betas > 0).all()


def test_alpha_bar_and_snr():
    betas = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    torch.testing.assert_close(alpha_bars(betas), torch.tensor([0.9, 0.72, 0.504, 0.3024],
                                                               dtype=torch.float64))
    assert snr(betas)[0].item() == pytest.approx(0.9 / 0.1)
    assert (snr(make_beta_schedule("linear", 1000)).diff() < 0).all()  # SNR falls monotonically


def test_worked_example_single_pixel():
    # x0 = 0.8, beta = [0.1, 0.2, 0.3, 0.4], eps = [-0.5, 0.3, -0.8, 0.9]
    x = torch.tensor(0.8, dtype=torch.float64)
    seen = []
    for beta, eps in zip([0.1, 0.2, 0.3, 0.4], [-0.5, 0.3, -0.8, 0.9]):
        x = noising_step(x, beta, torch.tensor(eps, dtype=torch.float64))
        seen.append(round(x.item(), 3))
    assert seen == [0.601, 0.672, 0.124, 0.665]


@pytest.mark.parametrize("name", SCHEDULES)
def test_forward_diffusion_equals_add_noise(name):
    betas = make_beta_schedule(name, 1000)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(5, 3, 8, 8, generator=gen) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([0, 1, 250, 998, 999])
    x_t, noise = forward_diffusion(x0, t, betas, noise=eps)
    assert noise is eps
    torch.testing.assert_close(x_t, scheduler.add_noise(x0, eps, t), atol=1e-5, rtol=1e-4)
    x_t_int, _ = forward_diffusion(x0, 250, betas, noise=eps)
    torch.testing.assert_close(x_t_int, scheduler.add_noise(x0, eps, torch.full((5,), 250)),
                               atol=1e-5, rtol=1e-4)


def test_forward_diffusion_draws_reproducible_unit_noise():
    betas = make_beta_schedule("linear", 1000)
    x0 = torch.zeros(4, 3, 32, 32)
    x_a, noise_a = forward_diffusion(x0, 999, betas, generator=torch.Generator().manual_seed(1))
    x_b, noise_b = forward_diffusion(x0, 999, betas, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x_a, x_b) and torch.equal(noise_a, noise_b)
    assert abs(noise_a.std().item() - 1) < 0.05 and abs(noise_a.mean().item()) < 0.05


def test_forward_diffusion_keeps_float64():
    betas = make_beta_schedule("linear", 10)
    x0 = torch.ones(2, 1, 2, 2, dtype=torch.float64)
    x_t, noise = forward_diffusion(x0, torch.tensor([0, 9]), betas)
    assert x_t.dtype == noise.dtype == torch.float64


@pytest.mark.parametrize("t", [-1, 1000, torch.tensor([0, 1000]), torch.tensor([-3, 2])])
def test_forward_diffusion_rejects_out_of_range_t(t):
    x0 = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        forward_diffusion(x0, t, make_beta_schedule("linear", 1000))


def test_forward_diffusion_rejects_malformed_inputs():
    betas = make_beta_schedule("linear", 100)
    x0 = torch.zeros(2, 3, 4, 4)
    with pytest.raises(TypeError, match="integers"):
        forward_diffusion(x0, torch.tensor([1.0, 2.0]), betas)
    with pytest.raises(TypeError):
        forward_diffusion(x0, 1.5, betas)
    with pytest.raises(ValueError, match="batch of 2"):
        forward_diffusion(x0, torch.tensor([1, 2, 3]), betas)
    with pytest.raises(ValueError, match="noise has shape"):
        forward_diffusion(x0, 1, betas, noise=torch.zeros(3, 3, 4, 4))


def test_closed_form_matches_iterating_in_distribution():
    betas = make_beta_schedule("linear", 1000).double()
    t, n = 300, 100_000
    gen = torch.Generator().manual_seed(0)
    x = torch.full((n,), 0.8, dtype=torch.float64)
    for s in range(t + 1):
        x = noising_step(x, betas[s], torch.randn(n, generator=gen, dtype=torch.float64))
    alpha_bar = alpha_bars(betas)[t]
    standard_error = math.sqrt(1 - alpha_bar) / math.sqrt(n)
    assert abs(x.mean().item() - math.sqrt(alpha_bar) * 0.8) < 5 * standard_error
    assert abs(x.std().item() - math.sqrt(1 - alpha_bar)) < 0.01
