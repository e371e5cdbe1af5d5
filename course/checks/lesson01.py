"""Checks for lesson 01, forward noising.

Oracles: diffusers' ``DDPMScheduler.add_noise`` for the forward jump, and the betas diffusers
builds for ``beta_schedule="squaredcos_cap_v2"`` for the cosine schedule.

The known mistakes are the slips section 8 of the lesson measures, written out here with plain
torch, so that a failed case can say which one the learner's answer equals.
"""

from __future__ import annotations

import math

import torch

from ..diffusion.broadcast import per_image
from .cases import Case, Mistake, seeded
from .catalog import hint
from .exercise import Exercise
from .judging import compare_tensor

__all__ = ["EXERCISES", "cosine_beta_schedule", "forward_diffusion", "hint"]


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
    x0 = inputs["x0"]
    expected_noise = inputs.get("noise")
    if expected_noise is not None:
        problem = compare_tensor("noise", noise, expected_noise, atol=0, rtol=0)
        if problem:
            return problem + " (return the noise you were given)"
    else:  # drawn by the learner: check its form and its spread, never its values
        if not isinstance(noise, torch.Tensor):
            return f"noise: expected a torch.Tensor, got {type(noise).__name__}"
        if noise.shape != x0.shape or noise.dtype != x0.dtype:
            return (f"noise: expected shape {list(x0.shape)} and dtype {x0.dtype} (like x0), "
                    f"got {list(noise.shape)} and {noise.dtype}")
        std = float(noise.std())
        if not 0.8 < std < 1.2:
            return f"noise: expected draws from N(0, 1) (std near 1), got std {std:.3f}"
        expected_noise = noise
    scheduler = _ddpm(inputs["betas"])
    expected = scheduler.add_noise(x0, expected_noise, _timesteps_for(inputs))
    return compare_tensor("x_t", x_t, expected, atol=1e-5)


# The known mistakes, each a whole (wrong) forward_diffusion. They share the right range check
# and noise handling, so that only the slip in the formula tells them apart.


def _prepared(x0, t, betas, noise):
    """(t as a LongTensor, noise, alpha_bar [T]) as a learner would set them up."""
    t = torch.as_tensor(t)
    if (t < 0).any() or (t >= len(betas)).any():
        raise ValueError("t out of range")
    if noise is None:
        noise = torch.randn_like(x0)
    return t, noise, torch.cumprod(1 - betas, dim=0)


def _no_square_roots(x0, t, betas, noise=None):
    t, noise, alpha_bar = _prepared(x0, t, betas, noise)
    a = per_image(alpha_bar[t], x0)
    return a * x0 + (1 - a) * noise, noise


def _shifted(offset: int):
    def shifted_t(x0, t, betas, noise=None):
        t, noise, alpha_bar = _prepared(x0, t, betas, noise)
        a = per_image(alpha_bar[t + offset], x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise, noise

    return shifted_t


def _no_reshape(x0, t, betas, noise=None):
    t, noise, alpha_bar = _prepared(x0, t, betas, noise)
    if t.ndim == 0:
        raise ValueError("with one shared t there is nothing to reshape: not this mistake")
    a = alpha_bar[t].to(x0.dtype)  # [B] lines up with the last axis, the width
    return a.sqrt() * x0 + (1 - a).sqrt() * noise, noise


def _betas_not_alpha_bar(x0, t, betas, noise=None):
    t, noise, _ = _prepared(x0, t, betas, noise)
    b = per_image(betas[t], x0)
    return (1 - b).sqrt() * x0 + b.sqrt() * noise, noise


_FORWARD_MISTAKES = [
    Mistake("no square roots", _no_square_roots,
            "x0 and the noise were scaled by alpha_bar_t and 1 - alpha_bar_t themselves; those "
            "are variances, and the scale factors are their square roots."),
    Mistake("one step too early (t - 1)", _shifted(-1),
            "alpha_bar was read one timestep early, as with 1-based timesteps; the code counts "
            "from 0, so t = 0 is already one step of noise (and t - 1 = -1 wraps to the end)."),
    Mistake("one step too late (t + 1)", _shifted(+1),
            "alpha_bar was read one timestep late; alpha_bar[t] already includes step t."),
    Mistake("a single beta instead of the running product", _betas_not_alpha_bar,
            "the answer is one noising step with beta_t, as if x0 were x_{t-1}; the jump from "
            "x0 needs the product of (1 - beta) over every step up to t."),
    Mistake("alpha_bar[t] not reshaped", _no_reshape,
            "alpha_bar[t] has shape [B] and was broadcast against the last axis, so each column "
            "of pixels got a different image's timestep; each image needs its own value."),
]

forward_diffusion = Exercise(
    name="forward_diffusion",
    function="forward_diffusion",
    points=2,
    oracles=("diffusers.*Scheduler*", "diffusers.schedulers"),  # every scheduler
    cases=[
        Case("one image [1, 3, 8, 8], t=500 as an int, linear betas, noise given",
             _forward_inputs((1, 3, 8, 8), 500, "linear"), _verify_forward),
        Case("batch [8, 3, 8, 8], t=tensor([0, 10, 100, 250, 500, 750, 900, 999]) one per "
             "image, cosine betas",
             _forward_inputs((8, 3, 8, 8),
                             lambda: torch.tensor([0, 10, 100, 250, 500, 750, 900, 999]),
                             "squaredcos_cap_v2", seed=1),
             _verify_forward),
        Case("noise=None: draw eps ~ N(0, I) yourself and return it",
             _forward_inputs((2, 3, 16, 16), 300, "linear", seed=2, with_noise=False),
             _verify_forward),
        Case("t=1000 with T=1000 steps is out of range: raise ValueError",
             _forward_inputs((1, 3, 4, 4), 1000, "linear", seed=3), raises=ValueError),
        # Hidden cases: the edges and the traps.
        Case("t=0 is one step of noise, not none", _forward_inputs((3, 3, 8, 8), 0,
             "scaled_linear", seed=10), _verify_forward, hidden=True),
        Case("t=999 with the cosine schedule (almost pure noise)",
             _forward_inputs((2, 1, 8, 8), 999, "squaredcos_cap_v2", seed=11), _verify_forward,
             hidden=True),
        Case("t=-1 is out of range: raise ValueError",
             _forward_inputs((1, 3, 4, 4), -1, "linear", seed=12), raises=ValueError,
             hidden=True),
        Case("float64 images stay float64",
             _forward_inputs((2, 3, 8, 8), lambda: torch.tensor([5, 50]), "linear", seed=13,
                             dtype=torch.float64), _verify_forward, hidden=True),
        Case("a short schedule (T=50) and a larger batch",
             _forward_inputs((8, 3, 16, 16), lambda: torch.arange(0, 50, 7)[:8].clamp(max=49),
                             "linear", T=50, seed=14), _verify_forward, hidden=True),
    ],
    mistakes=_FORWARD_MISTAKES,
    hints=[
        "Each image needs two numbers: how much of x0 survives to step t and how much noise is "
        "mixed in. Both come from alpha_bar_t, the product of (1 - beta) over steps 0 .. t "
        "(section 2).",
        "alpha_bar = torch.cumprod(1 - betas, dim=0) gives all T values at once and alpha_bar[t] "
        "picks yours. The formula uses their square roots. When t is a LongTensor [B], "
        "alpha_bar[t] has shape [B]: .view(-1, 1, 1, 1) makes each value scale a whole image. "
        "Check t against [0, T) before indexing, and use torch.randn_like(x0) when noise is None.",
        "x_t = alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * noise, where alpha_bar_t = "
        "torch.cumprod(1 - betas, dim=0)[t], viewed as [B, 1, 1, 1] when t is a tensor; "
        "return x_t, noise",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 2: cosine_beta_schedule(T) -> betas [T]
# --------------------------------------------------------------------------------------------


def _verify_cosine(inputs, got):
    expected = _diffusers_betas("squaredcos_cap_v2", inputs["T"])
    return compare_tensor("betas", got, expected, atol=1e-6, rtol=1e-5)


def _cosine_f(s: float):
    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    return f


def _cosine_one_step_early(T, s=0.008, max_beta=0.999):
    f = _cosine_f(s)
    betas = [min(1 - f(t / T) / f((t - 1) / T), max_beta) for t in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def _cosine_no_cap(T, s=0.008, max_beta=0.999):
    f = _cosine_f(s)
    return torch.tensor([1 - f((t + 1) / T) / f(t / T) for t in range(T)], dtype=torch.float32)


def _cosine_no_offset(T, s=0.008, max_beta=0.999):
    f = _cosine_f(0.0)
    betas = [min(1 - f((t + 1) / T) / f(t / T), max_beta) for t in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


_COSINE_MISTAKES = [
    Mistake("f evaluated one step early", _cosine_one_step_early,
            "beta_t came from f(t / T) / f((t - 1) / T), the step that ends at t; beta_t is the "
            "step that starts at t and ends at t + 1."),
    Mistake("no cap at max_beta", _cosine_no_cap,
            "the last betas were left uncapped; near u = 1, f reaches 0 and beta_t reaches 1, "
            "which the cap at max_beta (0.999) prevents."),
    Mistake("no offset s", _cosine_no_offset,
            "f was computed without the offset s = 0.008; it shifts and rescales u inside the "
            "cosine, (u + s) / (1 + s), and keeps the first betas from being vanishingly small."),
]

cosine_beta_schedule = Exercise(
    name="cosine_beta_schedule",
    function="cosine_beta_schedule",
    points=1,
    oracles=("diffusers.*Scheduler*", "diffusers.schedulers"),  # every scheduler
    # Short schedules in public: their betas are large enough for the known mistakes to differ
    # clearly, so a failed case can name the one it matches.
    cases=[
        Case("T=50", lambda: {"T": 50}, _verify_cosine),
        Case("T=10 (the cap at 0.999 bites on the last step)", lambda: {"T": 10},
             _verify_cosine),
        Case("T=1", lambda: {"T": 1}, _verify_cosine, hidden=True),
        Case("T=1000", lambda: {"T": 1000}, _verify_cosine, hidden=True),
        Case("T=4000", lambda: {"T": 4000}, _verify_cosine, hidden=True),
    ],
    mistakes=_COSINE_MISTAKES,
    hints=[
        "Write f(u) as a small function first. Then make one beta for each t in 0 .. T-1 from "
        "how much f falls during that step, from u = t / T to u = (t + 1) / T.",
        "Step t keeps the fraction f((t + 1) / T) / f(t / T) of the signal, so beta_t is one "
        "minus that, capped with min(..., max_beta). Keep s inside f: (u + s) / (1 + s).",
        "f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2; betas = "
        "[min(1 - f((t + 1) / T) / f(t / T), max_beta) for t in range(T)]; "
        "return torch.tensor(betas, dtype=torch.float32)",
    ],
)

EXERCISES = [forward_diffusion, cosine_beta_schedule]
