"""Checks for lesson 03, DDIM and schedulers.

Oracles: diffusers' ``DDIMScheduler.step`` (``clip_sample=False``) for the DDIM update, and the
loop every diffusers pipeline runs (``set_timesteps``, the ``init_noise_sigma`` attribute,
``scale_model_input``, ``step``) for sampling with any scheduler.

The known mistakes are the slips the lesson warns about, written out here with plain torch and
diffusers, so that a failed case can say which one the answer equals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cases import Case, Mistake, seeded
from .catalog import hint
from .exercise import Exercise
from .judging import compare_tensor
from .oracles import diffusers_quiet

__all__ = ["EXERCISES", "ddim_step", "hint", "sample_with_scheduler"]


def _ddim(schedule="linear", T=1000, steps=20):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=T, beta_schedule=schedule, clip_sample=False)
    scheduler.set_timesteps(steps)
    return scheduler


# --------------------------------------------------------------------------------------------
# Exercise 1: ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None)
# --------------------------------------------------------------------------------------------


def _ddim_case(name, index, seed, eta=0.0, schedule="linear", steps=20, shape=(2, 3, 8, 8),
               hidden=False):
    """Step ``index`` of a ``steps``-step DDIM schedule, as diffusers' scheduler takes it."""

    def timesteps():
        scheduler = _ddim(schedule, steps=steps)
        t = int(scheduler.timesteps[index])
        prev = t - scheduler.config.num_train_timesteps // steps
        alpha_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        return scheduler, t, float(scheduler.alphas_cumprod[t]), float(alpha_prev)

    def make():
        _, _, alpha_bar_t, alpha_bar_prev = timesteps()
        gen = seeded(seed)
        x_t, eps = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        inputs = {"x_t": x_t, "eps": eps, "alpha_bar_t": alpha_bar_t,
                  "alpha_bar_prev": alpha_bar_prev}
        if eta:
            inputs.update(eta=eta, noise=torch.randn(shape, generator=gen))
        return inputs

    def verify(inputs, got):
        scheduler, t, _, _ = timesteps()
        expected = scheduler.step(inputs["eps"], t, inputs["x_t"], eta=eta,
                                  variance_noise=inputs.get("noise")).prev_sample
        return compare_tensor("x_prev", got, expected, atol=1e-5, rtol=1e-4)

    return Case(name, make, verify, hidden=hidden)


# The known mistakes, in float64 like a careful answer, returned in the input's dtype. With
# eta = 0 the eta slips give the right answer: only a failed case is compared with them.


def _ddim_parts(x_t, eps, alpha_bar_t, alpha_bar_prev, alpha_for_x0=None):
    """(eps, alpha_bar_t, alpha_bar_prev, x0_hat) in float64; x0_hat uses ``alpha_for_x0``."""
    a = torch.as_tensor(alpha_bar_t, dtype=torch.float64)
    prev = torch.as_tensor(alpha_bar_prev, dtype=torch.float64)
    x, e = x_t.double(), eps.double()
    level = a if alpha_for_x0 is None else alpha_for_x0(a, prev)
    return e, a, prev, (x - (1 - level).sqrt() * e) / level.sqrt()


def _sigma(eta, a, prev):
    return eta * ((1 - prev) / (1 - a)).sqrt() * (1 - a / prev).sqrt()


def _fresh(x_t, noise):
    return (torch.randn_like(x_t) if noise is None else noise).double()


def _ddim_ignores_eta(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None):
    e, _, prev, x0 = _ddim_parts(x_t, eps, alpha_bar_t, alpha_bar_prev)
    return (prev.sqrt() * x0 + (1 - prev).sqrt() * e).to(x_t.dtype)


def _ddim_with_sigma(sigma_of, keep_sigma_in_direction=True, own_noise=False):
    """A DDIM step with sigma = ``sigma_of(eta, a, prev)`` and one slip in how it is used.

    Like the slips themselves, these only go wrong when eta > 0.
    """

    def step(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None):
        e, a, prev, x0 = _ddim_parts(x_t, eps, alpha_bar_t, alpha_bar_prev)
        sigma = sigma_of(eta, a, prev)
        rest = 1 - prev - sigma**2 if keep_sigma_in_direction else 1 - prev
        x_prev = prev.sqrt() * x0 + rest.sqrt() * e
        if eta:
            z = torch.randn_like(x_t).double() if own_noise else _fresh(x_t, noise)
            x_prev = x_prev + sigma * z
        return x_prev.to(x_t.dtype)

    return step


def _ddim_with_step_alpha(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None):
    # the one-step alpha_t = alpha_bar_t / alpha_bar_prev where x0_hat needs alpha_bar_t
    e, a, prev, x0 = _ddim_parts(x_t, eps, alpha_bar_t, alpha_bar_prev,
                                 alpha_for_x0=lambda a, prev: a / prev)
    sigma = _sigma(eta, a, prev)
    x_prev = prev.sqrt() * x0 + (1 - prev - sigma**2).sqrt() * e
    if eta:
        x_prev = x_prev + sigma * _fresh(x_t, noise)
    return x_prev.to(x_t.dtype)


ddim_step = Exercise(
    name="ddim_step",
    function="ddim_step",
    points=2,
    oracles=("diffusers.*Scheduler*", "diffusers.schedulers"),  # every scheduler
    cases=[
        _ddim_case("first of 20 steps (t = 950 -> 900)", 0, 0),
        _ddim_case("a middle step (t = 500 -> 450)", 9, 1),
        _ddim_case("the last step lands on alpha_bar_prev = 1: the clean image", 19, 2),
        _ddim_case("eta = 1: as much fresh noise as DDPM (t = 700 -> 650)", 5, 4, eta=1.0),
        _ddim_case("10-step schedule, cosine betas", 3, 3, schedule="squaredcos_cap_v2", steps=10,
                   hidden=True),
        _ddim_case("eta = 0.5, a batch of 8 at 16 x 16", 12, 5, eta=0.5, shape=(8, 3, 16, 16),
                   hidden=True),
    ],
    mistakes=[
        Mistake("alpha instead of alpha_bar", _ddim_with_step_alpha,
                "x0_hat was computed with the one-step alpha_t = alpha_bar_t / alpha_bar_prev "
                "(the ratio DDPM's step uses); x_t was noised in one go from x_0, so undoing it "
                "needs the cumulative alpha_bar_t."),
        Mistake("eta ignored", _ddim_ignores_eta,
                "with eta > 0 the answer is still the deterministic eta = 0 update; eta sets "
                "sigma, which takes sigma^2 from the eps direction's variance and comes back as "
                "sigma * noise."),
        Mistake("sigma without its first factor", _ddim_with_sigma(
                    lambda eta, a, prev: eta * (1 - a / prev).sqrt()),
                "sigma was eta * sqrt(1 - alpha_bar_t / alpha_bar_prev), the square root of the "
                "jump's beta (DDPM's larger \"fixed_large\" variance); the DDIM sigma also "
                "carries the factor sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)), so that "
                "eta = 1 gives DDPM's posterior variance."),
        Mistake("sigma's second square root missing", _ddim_with_sigma(
                    lambda eta, a, prev: eta * ((1 - prev) / (1 - a)).sqrt() * (1 - a / prev)),
                "sigma used (1 - alpha_bar_t / alpha_bar_prev) itself where the formula takes "
                "its square root."),
        Mistake("direction term without sigma^2", _ddim_with_sigma(
                    _sigma, keep_sigma_in_direction=False),
                "the eps direction was scaled by sqrt(1 - alpha_bar_prev); the fresh noise "
                "takes sigma^2 of that variance, so the direction keeps sqrt(1 - alpha_bar_prev "
                "- sigma^2)."),
        Mistake("drew its own noise", _ddim_with_sigma(_sigma, own_noise=True),
                "the fresh noise was drawn with torch.randn_like although the caller passed "
                "`noise`; draw only when noise is None, so that a seeded caller (and this "
                "check) controls the randomness."),
    ],
    hints=[
        "Two moves. First undo the noising to estimate the clean image x0_hat from x_t and eps "
        "(x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, solved for x_0). Then noise "
        "x0_hat again, to the level alpha_bar_prev, along the same direction eps.",
        "alpha_bar_t and alpha_bar_prev are already cumulative, and floats: torch.as_tensor(...) "
        "gives them .sqrt(). With eta = 0 the jump is sqrt(a_prev) x0_hat + sqrt(1 - a_prev) "
        "eps. With eta > 0, sigma = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev) "
        "takes sigma^2 of the eps direction's variance and comes back as sigma * noise.",
        "x0_hat = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t); "
        "sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev); "
        "x_prev = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - sigma**2) * eps + sigma * noise "
        "(the last term only when eta > 0; noise = torch.randn_like(x_t) when None)",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 2: sample_with_scheduler(model, scheduler, noise, steps) -> images
# --------------------------------------------------------------------------------------------


class _ProbeDenoiser(torch.nn.Module):
    """A fixed, cheap stand-in for the U-Net; any function of (x_t, t) tests the loop.

    Its weights come from a seeded generator of its own: building it leaves the learner's
    global random state alone.
    """

    def __init__(self):
        super().__init__()
        gen = seeded(0)
        self.weight = torch.nn.Parameter(torch.randn(3, 3, 3, 3, generator=gen) / 27**0.5)
        self.bias = torch.nn.Parameter(0.1 * torch.randn(3, generator=gen))

    def forward(self, x, t):
        out = torch.tanh(F.conv2d(x, self.weight, self.bias, padding=1))
        return 0.5 * out + 1e-4 * t.float().view(-1, 1, 1, 1)


def _scheduler(kind: str):
    import diffusers

    config = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
    if kind == "DDIMScheduler":
        config["clip_sample"] = False
    return getattr(diffusers, kind)(**config)


def _loop(model, scheduler, noise, steps, scale_noise=True, scale_input=True,
          step_on_model_input=False):
    """The pipeline loop, right with the defaults; each flag is one of the known slips."""
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma if scale_noise else noise
    with torch.no_grad(), diffusers_quiet():
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t) if scale_input else x
            eps = model(model_input, t.expand(x.shape[0]))
            x = scheduler.step(eps, t, model_input if step_on_model_input else x).prev_sample
    return x


def _loop_case(kind, steps, seed, hidden=False):
    def make():
        return {"model": _ProbeDenoiser(), "scheduler": _scheduler(kind),
                "noise": torch.randn(2, 3, 8, 8, generator=seeded(seed)), "steps": steps}

    def verify(inputs, got):
        expected = _loop(inputs["model"], _scheduler(kind), inputs["noise"], steps)
        return compare_tensor("images", got, expected, atol=1e-4, rtol=1e-3)

    return Case(f"{kind}, {steps} steps", make, verify, hidden=hidden)


def _forgot_init_noise_sigma(model, scheduler, noise, steps):
    return _loop(model, scheduler, noise, steps, scale_noise=False)


def _forgot_scale_model_input(model, scheduler, noise, steps):
    return _loop(model, scheduler, noise, steps, scale_input=False)


def _stepped_the_model_input(model, scheduler, noise, steps):
    return _loop(model, scheduler, noise, steps, step_on_model_input=True)


sample_with_scheduler = Exercise(
    name="sample_with_scheduler",
    function="sample_with_scheduler",
    points=2,
    cases=[
        _loop_case("DDIMScheduler", 10, 0),
        _loop_case("EulerDiscreteScheduler", 10, 1),
        _loop_case("DPMSolverMultistepScheduler", 10, 2, hidden=True),
        _loop_case("PNDMScheduler", 20, 3, hidden=True),
        _loop_case("HeunDiscreteScheduler", 10, 4, hidden=True),
    ],
    mistakes=[
        Mistake("start noise not scaled by init_noise_sigma", _forgot_init_noise_sigma,
                "the loop started from `noise` itself; scheduler.init_noise_sigma (an "
                "attribute, not a method) is the standard deviation the first step expects: "
                "1 for DDPM and DDIM, about 157 for Euler on this schedule."),
        Mistake("scale_model_input skipped", _forgot_scale_model_input,
                "the model saw x as it is; Euler-type schedulers keep x at a large scale and "
                "scheduler.scale_model_input(x, t) brings it back to what the model was trained "
                "on (for DDIM it changes nothing, which is why the DDIM case passes)."),
        Mistake("step given the model's input", _stepped_the_model_input,
                "scheduler.step received the scaled model input as its sample; it needs the "
                "current x itself, the one it returned last time (scaling is only for the "
                "model)."),
    ],
    hints=[
        "The scheduler does all the maths; the loop only calls it, in the order every diffusers "
        "pipeline does: choose the timesteps, scale the start noise, then at every timestep "
        "prepare the model's input, call the model, and let the scheduler take the step.",
        "scheduler.set_timesteps(steps) fills scheduler.timesteps. Multiply the start noise by "
        "scheduler.init_noise_sigma (an attribute). In the loop, the model sees "
        "scheduler.scale_model_input(x, t), while scheduler.step(eps, t, x) wants x itself and "
        "returns an object whose .prev_sample is the next x. The model takes a batch of "
        "timesteps: t.expand(len(x)).",
        "scheduler.set_timesteps(steps); x = noise * scheduler.init_noise_sigma; "
        "for t in scheduler.timesteps: eps = model(scheduler.scale_model_input(x, t), "
        "t.expand(len(x))); x = scheduler.step(eps, t, x).prev_sample; return x",
    ],
)

EXERCISES = [ddim_step, sample_with_scheduler]
