"""Checks for lesson 03, DDIM and schedulers.

Oracles: diffusers' ``DDIMScheduler.step`` (``clip_sample=False``) for the DDIM update, and the
loop every diffusers pipeline runs (``set_timesteps``, ``init_noise_sigma``,
``scale_model_input``, ``step``) for sampling with any scheduler.
"""

from __future__ import annotations

import torch

from .core import Case, Exercise, compare_tensor, seeded


def _ddim(schedule="linear", T=1000, steps=20):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=T, beta_schedule=schedule, clip_sample=False)
    scheduler.set_timesteps(steps)
    return scheduler


# --------------------------------------------------------------------------------------------
# Exercise 1: ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None)
# --------------------------------------------------------------------------------------------


def _ddim_case(name, index, seed, eta=0.0, schedule="linear", steps=20, shape=(2, 3, 8, 8),
               hidden=False, hint=""):
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

    return Case(name, make, verify, hidden=hidden, hint=hint or _DDIM_HINT)


_DDIM_HINT = ("x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t); "
              "x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev) eps when eta = 0")

ddim_step = Exercise(
    name="ddim_step",
    function="ddim_step",
    points=2,
    cases=[
        _ddim_case("first of 20 steps (t = 950 -> 900)", 0, 0),
        _ddim_case("a middle step (t = 500 -> 450)", 9, 1),
        _ddim_case("the last step lands on alpha_bar_prev = 1: the clean image", 19, 2),
        _ddim_case("10-step schedule, cosine betas", 3, 3, schedule="squaredcos_cap_v2", steps=10,
                   hidden=True),
        _ddim_case("eta = 1: as much fresh noise as DDPM", 5, 4, eta=1.0, hidden=True,
                   hint="sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev); "
                   "x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma noise"),
        _ddim_case("eta = 0.5, a batch of 8 at 16 x 16", 12, 5, eta=0.5, shape=(8, 3, 16, 16),
                   hidden=True),
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 2: sample_with_scheduler(model, scheduler, noise, steps) -> images
# --------------------------------------------------------------------------------------------


class _ProbeDenoiser(torch.nn.Module):
    """A fixed, cheap stand-in for the U-Net; any function of (x_t, t) tests the loop."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t):
        return 0.5 * torch.tanh(self.conv(x)) + 1e-4 * t.float().view(-1, 1, 1, 1)


def _scheduler(kind: str):
    import diffusers

    config = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
    if kind == "DDIMScheduler":
        config["clip_sample"] = False
    return getattr(diffusers, kind)(**config)


def _loop_case(kind, steps, seed, hidden=False, hint=""):
    def make():
        return {"model": _ProbeDenoiser(), "scheduler": _scheduler(kind),
                "noise": torch.randn(2, 3, 8, 8, generator=seeded(seed)), "steps": steps}

    def verify(inputs, got):
        model, scheduler = inputs["model"], _scheduler(kind)
        scheduler.set_timesteps(steps)
        x = inputs["noise"] * scheduler.init_noise_sigma
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = model(scheduler.scale_model_input(x, t), t.expand(x.shape[0]))
                x = scheduler.step(eps, t, x).prev_sample
        return compare_tensor("images", got, x, atol=1e-4, rtol=1e-3)

    return Case(f"{kind}, {steps} steps", make, verify, hidden=hidden, hint=hint or _LOOP_HINT)


_LOOP_HINT = ("scheduler.set_timesteps(steps); x = noise * scheduler.init_noise_sigma; for t in "
              "scheduler.timesteps: eps = model(scheduler.scale_model_input(x, t), "
              "t.expand(len(x))); x = scheduler.step(eps, t, x).prev_sample")

sample_with_scheduler = Exercise(
    name="sample_with_scheduler",
    function="sample_with_scheduler",
    points=2,
    cases=[
        _loop_case("DDIMScheduler", 10, 0),
        _loop_case("EulerDiscreteScheduler", 10, 1,
                   hint="Euler starts from noise * scheduler.init_noise_sigma (not 1) and needs "
                   "scheduler.scale_model_input(x, t) before the model"),
        _loop_case("DPMSolverMultistepScheduler", 10, 2, hidden=True),
        _loop_case("PNDMScheduler", 20, 3, hidden=True),
        _loop_case("HeunDiscreteScheduler", 10, 4, hidden=True),
    ],
)

EXERCISES = [ddim_step, sample_with_scheduler]
