"""Checks for lesson 01, forward noising.

Oracles: diffusers' ``DDPMScheduler.add_noise`` for the forward jump, and the betas diffusers
builds for ``beta_schedule="squaredcos_cap_v2"`` for the cosine schedule.
"""

from __future__ import annotations

import torch

from .core import Case, Exercise, compare_tensor, seeded


def _ddpm(betas: torch.Tensor):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist())


def _diffusers_betas(name: str, T: int) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=T, beta_schedule=name).betas


# --------------------------------------------------------------------------------------------
# Exercise 1: forward_diffusion(x0, t, betas, noise=None) -> (x_t, noise)
# --------------------------------------------------------------------------------------------


def _forward_inputs(shape, t, schedule, T=1000, seed=0, dtype=torch.float32, with_noise=True):
    def make():
        gen = seeded(seed)
        x0 = (torch.rand(shape, generator=gen) * 2 - 1).to(dtype)
        inputs = {"x0": x0, "t": t() if callable(t) else t,
                  "betas": _diffusers_betas(schedule, T)}
        if with_noise:
            inputs["noise"] = torch.randn(shape, generator=gen).to(dtype)
        return inputs

    return make


def _timesteps_for(inputs) -> torch.Tensor:
    t = torch.as_tensor(inputs["t"]).long()
    return t.expand(inputs["x0"].shape[0]) if t.ndim == 0 else t


def _verify_forward(inputs, got):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"expected a tuple (x_t, noise), got {type(got).__name__}: {got!r:.80}"
    x_t, noise = got
    expected_noise = inputs.get("noise")
    if expected_noise is not None:
        problem = compare_tensor("noise", noise, expected_noise, atol=0, rtol=0)
        if problem:
            return problem + " (return the noise you were given)"
    else:
        problem = compare_tensor("noise", noise, torch.empty_like(inputs["x0"]).normal_())
        if problem and "values differ" not in problem:
            return problem
        std = float(noise.std())
        if not 0.8 < std < 1.2:
            return f"noise: expected draws from N(0, 1) (std near 1), got std {std:.3f}"
        expected_noise = noise
    scheduler = _ddpm(inputs["betas"])
    expected = scheduler.add_noise(inputs["x0"], expected_noise, _timesteps_for(inputs))
    return compare_tensor("x_t", x_t, expected, atol=1e-5)


_FORWARD_HINT = ("x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * noise, with "
                 "alpha_bar = torch.cumprod(1 - betas, dim=0); index alpha_bar[t] and reshape it "
                 "to [B, 1, 1, 1] when t holds one timestep per image")

forward_diffusion = Exercise(
    name="forward_diffusion",
    function="forward_diffusion",
    points=2,
    cases=[
        Case("one image [1, 3, 8, 8], t=500 as an int, linear betas, noise given",
             _forward_inputs((1, 3, 8, 8), 500, "linear"), _verify_forward, hint=_FORWARD_HINT),
        Case("batch [4, 3, 8, 8], t=tensor([0, 10, 500, 999]) one per image, cosine betas",
             _forward_inputs((4, 3, 8, 8), lambda: torch.tensor([0, 10, 500, 999]),
                             "squaredcos_cap_v2", seed=1),
             _verify_forward, hint="reshape alpha_bar[t] from [B] to [B, 1, 1, 1] so it "
             "broadcasts over channels and pixels"),
        Case("noise=None: draw eps ~ N(0, I) yourself and return it",
             _forward_inputs((2, 3, 16, 16), 300, "linear", seed=2, with_noise=False),
             _verify_forward, hint="noise = torch.randn_like(x0) when noise is None"),
        Case("t=1000 with T=1000 steps is out of range: raise ValueError",
             _forward_inputs((1, 3, 4, 4), 1000, "linear", seed=3), raises=ValueError,
             hint="valid timesteps are 0 .. T-1; check t before indexing"),
        # Hidden cases: the edges and the traps.
        Case("t=0 is one step of noise, not none", _forward_inputs((3, 3, 8, 8), 0,
             "scaled_linear", seed=10), _verify_forward, hidden=True,
             hint="alpha_bar[0] = 1 - betas[0]: t is zero-based"),
        Case("t=999 with the cosine schedule (almost pure noise)",
             _forward_inputs((2, 1, 8, 8), 999, "squaredcos_cap_v2", seed=11), _verify_forward,
             hidden=True, hint=_FORWARD_HINT),
        Case("t=-1 is out of range: raise ValueError",
             _forward_inputs((1, 3, 4, 4), -1, "linear", seed=12), raises=ValueError,
             hidden=True, hint="negative indices silently pick the last timestep: reject them"),
        Case("float64 images stay float64",
             _forward_inputs((2, 3, 8, 8), lambda: torch.tensor([5, 50]), "linear", seed=13,
                             dtype=torch.float64), _verify_forward, hidden=True,
             hint="compute in x0's dtype: .to(x0.dtype)"),
        Case("a short schedule (T=50) and a larger batch",
             _forward_inputs((8, 3, 16, 16), lambda: torch.arange(0, 50, 7)[:8].clamp(max=49),
                             "linear", T=50, seed=14), _verify_forward, hidden=True,
             hint=_FORWARD_HINT),
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 2: cosine_beta_schedule(T) -> betas [T]
# --------------------------------------------------------------------------------------------


def _verify_cosine(inputs, got):
    expected = _diffusers_betas("squaredcos_cap_v2", inputs["T"])
    return compare_tensor("betas", got, expected, atol=1e-6, rtol=1e-5)


_COSINE_HINT = ("f(u) = cos((u + 0.008) / 1.008 * pi / 2) ** 2; "
                "beta_t = min(1 - f((t + 1) / T) / f(t / T), 0.999) for t = 0 .. T-1; "
                "return torch.tensor(betas, dtype=torch.float32)")

cosine_beta_schedule = Exercise(
    name="cosine_beta_schedule",
    function="cosine_beta_schedule",
    points=1,
    cases=[
        Case("T=1000", lambda: {"T": 1000}, _verify_cosine, hint=_COSINE_HINT),
        Case("T=10 (the cap at 0.999 bites on the last step)", lambda: {"T": 10},
             _verify_cosine, hint="cap each beta at 0.999: min(..., 0.999)"),
        Case("T=1", lambda: {"T": 1}, _verify_cosine, hidden=True, hint=_COSINE_HINT),
        Case("T=50", lambda: {"T": 50}, _verify_cosine, hidden=True, hint=_COSINE_HINT),
        Case("T=4000", lambda: {"T": 4000}, _verify_cosine, hidden=True, hint=_COSINE_HINT),
    ],
)

EXERCISES = [forward_diffusion, cosine_beta_schedule]
