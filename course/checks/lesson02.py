"""Checks for lesson 02, U-Net denoising and DDPM training.

Oracles: diffusers' ``get_timestep_embedding`` (the convention of its UNet2DModel),
``DDPMScheduler.add_noise`` with torch's ``mse_loss`` and autograd for the training loss, and
``DDPMScheduler.step`` (``clip_sample=False``, variance "fixed_small") for the reverse step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import Case, Exercise, compare_tensor, seeded

# --------------------------------------------------------------------------------------------
# Exercise 1: timestep_embedding(t, dim) -> [B, dim]
# --------------------------------------------------------------------------------------------


def _verify_embedding(inputs, got):
    from diffusers.models.embeddings import get_timestep_embedding

    expected = get_timestep_embedding(inputs["t"], inputs["dim"], flip_sin_to_cos=True,
                                      downscale_freq_shift=0)
    return compare_tensor("embedding", got, expected, atol=1e-5)


_EMBED_HINT = ("half = dim // 2; freqs = exp(-ln(10000) * arange(half) / half); "
               "angles = t[:, None] * freqs[None, :]; return cat([cos(angles), sin(angles)], -1)")

timestep_embedding = Exercise(
    name="timestep_embedding",
    function="timestep_embedding",
    cases=[
        Case("t = [0, 1, 10, 999], dim = 8", lambda: {"t": torch.tensor([0, 1, 10, 999]),
                                                     "dim": 8}, _verify_embedding,
             hint=_EMBED_HINT),
        Case("a batch of 16 random timesteps, dim = 128",
             lambda: {"t": torch.randint(0, 1000, (16,), generator=seeded(0)), "dim": 128},
             _verify_embedding, hint="cosines first, then sines (diffusers' flip_sin_to_cos=True)"),
        Case("one timestep, dim = 2", lambda: {"t": torch.tensor([500]), "dim": 2},
             _verify_embedding, hidden=True, hint=_EMBED_HINT),
        Case("large dim = 512", lambda: {"t": torch.arange(0, 1000, 97), "dim": 512},
             _verify_embedding, hidden=True, hint=_EMBED_HINT),
        Case("float timesteps (schedulers such as Euler use them)",
             lambda: {"t": torch.tensor([0.5, 17.25, 999.0]), "dim": 32}, _verify_embedding,
             hidden=True, hint="convert t with .float() before multiplying"),
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 2: ddpm_loss(model, x0, t, noise, betas) -> scalar
# --------------------------------------------------------------------------------------------


class _ProbeModel(torch.nn.Module):
    """A small fixed network standing in for the U-Net: the loss must not care which model."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.time_scale = torch.nn.Parameter(torch.randn(3) * 0.01)

    def forward(self, x, t):
        return self.conv(x) + self.time_scale[None, :, None, None] * t.float()[:, None, None, None]


def _loss_inputs(batch, seed, schedule="linear", T=1000):
    def make():
        from diffusers import DDPMScheduler

        gen = seeded(seed)
        return {"model": _ProbeModel(seed),
                "x0": torch.rand(batch, 3, 8, 8, generator=gen) * 2 - 1,
                "t": torch.randint(0, T, (batch,), generator=gen),
                "noise": torch.randn(batch, 3, 8, 8, generator=gen),
                "betas": DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule).betas}

    return make


def _verify_loss(inputs, got):
    from diffusers import DDPMScheduler

    if not isinstance(got, torch.Tensor) or got.ndim != 0:
        shape = list(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"expected a scalar tensor (the mean over the batch), got {shape}"
    if not got.requires_grad:
        return "the loss has no gradient: compute it from model(x_t, t), without torch.no_grad()"
    model, betas = inputs["model"], inputs["betas"]
    scheduler = DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist())
    x_t = scheduler.add_noise(inputs["x0"], inputs["noise"], inputs["t"])
    expected = F.mse_loss(model(x_t, inputs["t"]), inputs["noise"])
    problem = compare_tensor("loss", got.detach(), expected.detach(), atol=1e-5)
    if problem:
        return problem
    # The gradient is what training uses: it must match too.
    grads = torch.autograd.grad(expected, list(model.parameters()))
    got_grads = torch.autograd.grad(got, list(model.parameters()), allow_unused=True)
    for (name, _), g_exp, g_got in zip(model.named_parameters(), grads, got_grads):
        if g_got is None:
            return f"the loss does not depend on the model's {name}: call model(x_t, t)"
        problem = compare_tensor(f"gradient of {name}", g_got, g_exp, atol=1e-5)
        if problem:
            return problem
    return None


_LOSS_HINT = ("x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (reshape alpha_bar[t] to "
              "[B, 1, 1, 1]); return F.mse_loss(model(x_t, t), noise)")

ddpm_loss = Exercise(
    name="ddpm_loss",
    function="ddpm_loss",
    cases=[
        Case("batch of 4 [4, 3, 8, 8], random t, linear betas", _loss_inputs(4, 0), _verify_loss,
             hint=_LOSS_HINT),
        Case("batch of 1", _loss_inputs(1, 1), _verify_loss, hint=_LOSS_HINT),
        Case("batch of 16, cosine betas", _loss_inputs(16, 2, "squaredcos_cap_v2"),
             _verify_loss, hidden=True, hint=_LOSS_HINT),
        Case("T = 50", _loss_inputs(8, 3, T=50), _verify_loss, hidden=True, hint=_LOSS_HINT),
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 3: ddpm_step(x_t, eps, t, betas, noise=None) -> x_{t-1}
# --------------------------------------------------------------------------------------------


def _step_case(name, t, seed, schedule="linear", shape=(2, 3, 8, 8), T=1000, hidden=False,
               hint=""):
    """A case for ddpm_step whose noise diffusers can redraw from the same seed."""
    noise_seed = seed + 1000

    def make():
        from diffusers import DDPMScheduler

        gen = seeded(seed)
        return {"x_t": torch.randn(shape, generator=gen), "eps": torch.randn(shape, generator=gen),
                "t": t, "betas": DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule).betas,
                "noise": torch.randn(shape, generator=seeded(noise_seed))}

    def verify(inputs, got):
        from diffusers import DDPMScheduler

        betas = inputs["betas"]
        scheduler = DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist(),
                                  clip_sample=False, variance_type="fixed_small")
        # diffusers draws its noise from the generator; the same seed draws our ``noise``.
        expected = scheduler.step(inputs["eps"], inputs["t"], inputs["x_t"],
                                  generator=seeded(noise_seed)).prev_sample
        # float32 round-off is amplified at small t, where 1 - alpha_bar_t is tiny
        return compare_tensor("x_prev", got, expected, atol=5e-4, rtol=1e-3)

    return Case(name, make, verify, hidden=hidden, hint=hint or _STEP_HINT)


_STEP_HINT = ("mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(1 - beta_t); "
              "beta_tilde = beta_t * (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); "
              "x_prev = mean + sqrt(beta_tilde) * noise, and just mean at t = 0")

ddpm_step = Exercise(
    name="ddpm_step",
    function="ddpm_step",
    points=2,
    cases=[
        _step_case("t = 999 (pure noise), linear betas", 999, 0),
        _step_case("t = 500", 500, 1),
        _step_case("t = 0: the last step adds no noise", 0, 2,
                   hint="at t = 0 return the mean; alpha_bar_{-1} is 1 (nothing before the start)"),
        _step_case("t = 1 (alpha_bar_{t-1} is alpha_bar_0, not 1)", 1, 3, hidden=True),
        _step_case("cosine betas, t = 900, a batch of 8", 900, 4, "squaredcos_cap_v2",
                   (8, 3, 16, 16), hidden=True),
        _step_case("T = 50, t = 25", 25, 5, T=50, hidden=True),
    ],
)

EXERCISES = [timestep_embedding, ddpm_loss, ddpm_step]
