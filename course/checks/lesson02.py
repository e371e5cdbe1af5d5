"""Checks for lesson 02, U-Net denoising and DDPM training.

Oracles: diffusers' ``get_timestep_embedding`` (the convention of its UNet2DModel), its
``ResnetBlock2D`` given the very weights of the learner's block, ``DDPMScheduler.add_noise`` with
torch's ``mse_loss`` and autograd for the training loss, and ``DDPMScheduler.step``
(``clip_sample=False``, variance "fixed_small") for the reverse step.

The known mistakes are the slips the lesson warns about (and measures, for the reverse step),
written out here with plain torch, so that a failed case can say which one the answer equals.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .cases import Case, Mistake, seeded
from .catalog import hint
from .exercise import Exercise
from .judging import compare_tensor, same_answer

__all__ = ["EXERCISES", "ddpm_loss", "ddpm_step", "hint", "resblock_forward",
           "timestep_embedding"]


def _global_rng_untouched():
    """A block whose draws from torch's global CPU generator (a layer's default initialisation)
    are undone on exit: the weights that matter are then drawn from a seeded generator."""
    return torch.random.fork_rng(devices=[])


def _init_from(module: torch.nn.Module, gen: torch.Generator) -> torch.nn.Module:
    """Give every parameter a fresh value drawn from ``gen`` (the global RNG is not touched).

    Weights get He-like scales; norm scales sit around 1 and biases around 0, none exactly at
    their defaults, so that a layer left out changes the answer.
    """
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.ndim == 1:  # GroupNorm's scale
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))
    return module


def _unless_right(wrong, right):
    """``wrong`` as a known mistake that stays silent where it gives the right answer anyway.

    Some slips change nothing on some inputs (noise at t = 0 only shows at t = 0; cosines and
    sines interleaved are the right layout when dim = 2). There the mistake raises, so that an
    answer which fails for another reason is never blamed on it.
    """

    def mistake(**inputs):
        got = wrong(**inputs)
        if same_answer(got, right(**inputs)):
            raise ValueError("gives the right answer on these inputs: not this mistake")
        return got

    mistake.__name__ = getattr(wrong, "__name__", "mistake")
    return mistake


# --------------------------------------------------------------------------------------------
# Exercise 1: timestep_embedding(t, dim) -> [B, dim]
# --------------------------------------------------------------------------------------------


#: every diffusers scheduler, not only DDPM's: any of them computes the same step
_DDPM_SCHEDULER = ("diffusers.*Scheduler*", "diffusers.schedulers")


def _verify_embedding(inputs, got):
    from diffusers.models.embeddings import get_timestep_embedding

    expected = get_timestep_embedding(inputs["t"], inputs["dim"], flip_sin_to_cos=True,
                                      downscale_freq_shift=0)
    return compare_tensor("embedding", got, expected, atol=1e-5)


def _angles(t, dim, divisor=None):
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32)
    freqs = torch.exp(-math.log(10000.0) * i / (divisor if divisor is not None else half))
    return t.float()[:, None] * freqs[None, :]


def _embedding_right(t, dim):
    angles = _angles(t, dim)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def _embedding_sines_first(t, dim):
    angles = _angles(t, dim)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def _embedding_half_minus_one(t, dim):
    if dim < 4:
        raise ValueError("half - 1 is 0 here: the division fails rather than match")
    angles = _angles(t, dim, divisor=dim // 2 - 1)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def _embedding_interleaved(t, dim):
    angles = _angles(t, dim)
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).flatten(1)


timestep_embedding = Exercise(
    name="timestep_embedding",
    function="timestep_embedding",
    oracles=("diffusers.models.embeddings.get_timestep_embedding",
             "diffusers.models.embeddings.Timesteps"),
    cases=[
        Case("t = [0, 1, 10, 999], dim = 8", lambda: {"t": torch.tensor([0, 1, 10, 999]),
                                                     "dim": 8}, _verify_embedding),
        Case("a batch of 16 random timesteps, dim = 128",
             lambda: {"t": torch.randint(0, 1000, (16,), generator=seeded(0)), "dim": 128},
             _verify_embedding),
        Case("one timestep, dim = 2", lambda: {"t": torch.tensor([500]), "dim": 2},
             _verify_embedding, hidden=True),
        Case("large dim = 512", lambda: {"t": torch.arange(0, 1000, 97), "dim": 512},
             _verify_embedding, hidden=True),
        Case("float timesteps (schedulers such as Euler use them)",
             lambda: {"t": torch.tensor([0.5, 17.25, 999.0]), "dim": 32}, _verify_embedding,
             hidden=True),
    ],
    mistakes=[
        Mistake("sines and cosines swapped",
                _unless_right(_embedding_sines_first, _embedding_right),
                "the sines come first; this course (like diffusers' UNet2DModel, "
                "flip_sin_to_cos=True) puts the cosines in the first half."),
        Mistake("frequencies divided by half - 1",
                _unless_right(_embedding_half_minus_one, _embedding_right),
                "the exponent was divided by d/2 - 1 (a convention some code uses, diffusers' "
                "downscale_freq_shift=1); here it is i / (d/2), so the slowest frequency is "
                "10000^(-(d/2 - 1)/(d/2)), not exactly 1/10000."),
        Mistake("cosines and sines interleaved",
                _unless_right(_embedding_interleaved, _embedding_right),
                "cos and sin alternate (cos f0, sin f0, cos f1, ...); the layout is all cosines "
                "first, then all sines, concatenated along the last axis."),
    ],
    hints=[
        "Build the d/2 frequencies f_i first, one per i = 0 .. d/2 - 1. Then multiply every "
        "timestep by every frequency: an outer product of shape [B, d/2].",
        "f_i = exp(-ln(10000) * i / (d/2)). Convert t with .float() (it may hold ints), take "
        "t[:, None] * freqs[None, :], and concatenate cos of that, then sin of it, on the last "
        "axis: [B, d/2] + [B, d/2] -> [B, d].",
        "half = dim // 2; freqs = exp(-ln(10000) * arange(half) / half); "
        "angles = t.float()[:, None] * freqs[None, :]; return cat([cos(angles), sin(angles)], -1)",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 2: resblock_forward(block, x, t_emb) -> [B, C_out, H, W]
# --------------------------------------------------------------------------------------------


class _ResBlockLayers(torch.nn.Module):
    """The layers of a time-conditioned residual block, without a forward pass of its own.

    The same names as ``course.nets.ResBlock`` (norm1, conv1, time_proj, norm2, dropout, conv2,
    skip), so the learner's code reads as it does in the lesson; the check copies the weights
    into diffusers' ``ResnetBlock2D`` to get the expected output.
    """

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int, seed: int):
        super().__init__()
        with _global_rng_untouched():
            self.norm1 = torch.nn.GroupNorm(groups, c_in)
            self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
            self.time_proj = torch.nn.Linear(time_dim, c_out)
            self.norm2 = torch.nn.GroupNorm(groups, c_out)
            self.dropout = torch.nn.Dropout(0.0)
            self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, padding=1)
            self.skip = torch.nn.Conv2d(c_in, c_out, 1) if c_in != c_out else torch.nn.Identity()
        _init_from(self, seeded(seed))
        self.eval()

    def forward(self, *args, **kwargs):
        raise RuntimeError("this block's forward pass is the one you are writing: call its "
                           "layers (block.norm1, block.conv1, ...) instead of block(...)")


def _resblock_inputs(c_in, c_out, seed, batch=2, size=(8, 8), time_dim=32, groups=4):
    def make():
        gen = seeded(seed + 100)
        return {"block": _ResBlockLayers(c_in, c_out, time_dim, groups, seed),
                "x": torch.randn(batch, c_in, *size, generator=gen),
                "t_emb": torch.randn(batch, time_dim, generator=gen)}

    return make


def _diffusers_block(block: _ResBlockLayers):
    """diffusers' ResnetBlock2D with the weights of ``block``."""
    from diffusers.models.resnet import ResnetBlock2D

    c_in, c_out = block.conv1.in_channels, block.conv1.out_channels
    theirs = ResnetBlock2D(in_channels=c_in, out_channels=c_out,
                           temb_channels=block.time_proj.in_features,
                           groups=block.norm1.num_groups, eps=block.norm1.eps, dropout=0.0,
                           time_embedding_norm="default", output_scale_factor=1.0)
    names = {"time_proj": "time_emb_proj", "skip": "conv_shortcut"}
    weights = {}
    for key, value in block.state_dict().items():
        module, rest = key.split(".", 1)
        weights[f"{names.get(module, module)}.{rest}"] = value
    theirs.load_state_dict(weights, strict=True)
    return theirs.eval()


def _verify_resblock(inputs, got):
    with torch.no_grad():
        expected = _diffusers_block(inputs["block"])(inputs["x"], inputs["t_emb"])
    return compare_tensor("output", got, expected, atol=1e-5, rtol=1e-4)


def _resblock_time_without_silu(block, x, t_emb):
    h = block.conv1(F.silu(block.norm1(x)))
    h = h + block.time_proj(t_emb)[:, :, None, None]
    h = block.conv2(block.dropout(F.silu(block.norm2(h))))
    return block.skip(x) + h


def _resblock_time_after_conv2(block, x, t_emb):
    h = block.conv1(F.silu(block.norm1(x)))
    h = block.conv2(block.dropout(F.silu(block.norm2(h))))
    h = h + block.time_proj(F.silu(t_emb))[:, :, None, None]
    return block.skip(x) + h


def _resblock_no_shortcut(block, x, t_emb):
    h = block.conv1(F.silu(block.norm1(x)))
    h = h + block.time_proj(F.silu(t_emb))[:, :, None, None]
    return block.conv2(block.dropout(F.silu(block.norm2(h))))


def _resblock_silu_before_norm(block, x, t_emb):
    h = block.conv1(block.norm1(F.silu(x)))
    h = h + block.time_proj(F.silu(t_emb))[:, :, None, None]
    h = block.conv2(block.dropout(block.norm2(F.silu(h))))
    return block.skip(x) + h


resblock_forward = Exercise(
    name="resblock_forward",
    function="resblock_forward",
    oracles=("diffusers.models.resnet",),
    points=2,
    cases=[
        Case("16 -> 16 channels, batch 2, 8 x 8", _resblock_inputs(16, 16, 0),
             _verify_resblock),
        Case("8 -> 16 channels: the shortcut is a 1x1 conv", _resblock_inputs(8, 16, 1),
             _verify_resblock),
        Case("batch 1", _resblock_inputs(16, 16, 2, batch=1), _verify_resblock, hidden=True),
        Case("32 -> 16 channels, 4 x 6 pixels", _resblock_inputs(32, 16, 3, size=(4, 6)),
             _verify_resblock, hidden=True),
        Case("another seed, time_dim 128, 8 groups", _resblock_inputs(16, 32, 4, batch=3,
                                                                       time_dim=128, groups=8),
             _verify_resblock, hidden=True),
        Case("one group (GroupNorm over all channels)", _resblock_inputs(8, 8, 5, groups=1),
             _verify_resblock, hidden=True),
    ],
    mistakes=[
        Mistake("time embedding without SiLU", _resblock_time_without_silu,
                "t_emb went straight into block.time_proj; it passes through SiLU first, as "
                "every input of a linear layer in this network does."),
        Mistake("time embedding added after the second conv", _resblock_time_after_conv2,
                "the time shift was added at the end; it belongs between the two convolutions, "
                "so that the second half of the block can react to the noise level."),
        Mistake("no shortcut", _resblock_no_shortcut,
                "the output is only the convolution branch; a residual block adds its input "
                "back, through block.skip (a 1x1 conv when the channel count changes)."),
        Mistake("SiLU before GroupNorm", _resblock_silu_before_norm,
                "each half applies SiLU and then GroupNorm; the order is GroupNorm, then SiLU, "
                "then the convolution."),
    ],
    hints=[
        "Follow the four lines of the equation above the exercise, one line of code each: the "
        "first half (norm1, SiLU, conv1), the time shift, the second half (norm2, SiLU, "
        "dropout, conv2), and the shortcut added back.",
        "The time shift is block.time_proj(F.silu(t_emb)), shape [B, C_out]; index it with "
        "[:, :, None, None] so it broadcasts over H and W. block.skip is already the right "
        "shortcut: a 1x1 conv when C_in != C_out, the identity otherwise.",
        "h = block.conv1(F.silu(block.norm1(x))); "
        "h = h + block.time_proj(F.silu(t_emb))[:, :, None, None]; "
        "h = block.conv2(block.dropout(F.silu(block.norm2(h)))); return block.skip(x) + h",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 3: ddpm_loss(model, x0, t, noise, betas) -> scalar
# --------------------------------------------------------------------------------------------


class _ProbeModel(torch.nn.Module):
    """A small fixed network standing in for the U-Net: the loss must not care which model.

    Its weights come from a generator seeded with ``seed``; the global RNG is not touched.
    """

    def __init__(self, seed: int):
        super().__init__()
        gen = seeded(seed)
        with _global_rng_untouched():
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.time_scale = torch.nn.Parameter(torch.randn(3, generator=gen) * 0.5)
        with torch.no_grad():
            bound = 1 / math.sqrt(27)  # torch's default range for a 3x3 conv on 3 channels
            self.conv.weight.copy_((torch.rand(self.conv.weight.shape, generator=gen) * 2 - 1)
                                   * bound)
            self.conv.bias.copy_((torch.rand(3, generator=gen) * 2 - 1) * bound)

    def forward(self, x, t):
        # t / 1000 keeps the time term about the size of the image term
        time_term = self.time_scale[None, :, None, None] * (t.float() / 1000).view(-1, 1, 1, 1)
        return self.conv(x) + time_term


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


def _capture_loss(inputs, got):
    """The loss and its gradient with respect to every model parameter: what training uses,
    as plain tensors (a graph cannot leave the learner's kernel). Anything that is not a scalar
    loss with a graph is returned as it came, for the verdict to explain."""
    if not isinstance(got, torch.Tensor) or got.ndim != 0 or not got.requires_grad:
        return got
    named = list(inputs["model"].named_parameters())
    grads = torch.autograd.grad(got, [p for _, p in named], allow_unused=True)
    return {"loss": got.detach(),
            "grads": {name: None if g is None else g.detach()
                      for (name, _), g in zip(named, grads)}}


def _verify_loss(inputs, got):
    from diffusers import DDPMScheduler

    if isinstance(got, torch.Tensor) and got.ndim == 0:
        return "the loss has no gradient: compute it from model(x_t, t), without torch.no_grad()"
    if not isinstance(got, dict):
        shape = list(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"expected a scalar tensor (the mean over the batch), got {shape}"
    model, betas = inputs["model"], inputs["betas"]
    scheduler = DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist())
    x_t = scheduler.add_noise(inputs["x0"], inputs["noise"], inputs["t"])
    expected = F.mse_loss(model(x_t, inputs["t"]), inputs["noise"])
    problem = compare_tensor("loss", got["loss"], expected.detach(), atol=1e-5)
    if problem:
        return problem
    # The gradient is what training uses: it must match too.
    grads = torch.autograd.grad(expected, list(model.parameters()))
    got_grads = got.get("grads") or {}
    for (name, _), g_exp in zip(model.named_parameters(), grads):
        if got_grads.get(name) is None:
            return f"the loss does not depend on the model's {name}: call model(x_t, t)"
        problem = compare_tensor(f"gradient of {name}", got_grads[name], g_exp, atol=1e-5)
        if problem:
            return problem
    return None


def _alpha_bar_t(betas, t):
    return torch.cumprod(1 - betas, dim=0)[t].view(-1, 1, 1, 1)


def _loss_predicts_x0(model, x0, t, noise, betas):
    a = _alpha_bar_t(betas, t)
    return F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), x0)


def _loss_no_square_roots(model, x0, t, noise, betas):
    a = _alpha_bar_t(betas, t)
    return F.mse_loss(model(a * x0 + (1 - a) * noise, t), noise)


def _loss_alpha_not_alpha_bar(model, x0, t, noise, betas):
    a = (1 - betas)[t].view(-1, 1, 1, 1)
    return F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), noise)


ddpm_loss = Exercise(
    name="ddpm_loss",
    function="ddpm_loss",
    oracles=_DDPM_SCHEDULER,
    capture=_capture_loss,
    cases=[
        Case("batch of 4 [4, 3, 8, 8], random t, linear betas", _loss_inputs(4, 0), _verify_loss),
        Case("batch of 1", _loss_inputs(1, 1), _verify_loss),
        Case("batch of 16, cosine betas", _loss_inputs(16, 2, "squaredcos_cap_v2"),
             _verify_loss, hidden=True),
        Case("T = 50", _loss_inputs(8, 3, T=50), _verify_loss, hidden=True),
    ],
    mistakes=[
        Mistake("predicting x0", _loss_predicts_x0,
                "the model's output was compared with the clean image x0; this model predicts "
                "the noise, so the target is the noise that made x_t."),
        Mistake("no square roots", _loss_no_square_roots,
                "x_t was made with alpha_bar_t and 1 - alpha_bar_t as scale factors; those are "
                "variances, and the factors are their square roots."),
        Mistake("alpha_t instead of alpha_bar_t", _loss_alpha_not_alpha_bar,
                "x_t was made with 1 - beta_t, one step of noise; the jump from x0 to step t "
                "needs the running product alpha_bar_t."),
    ],
    hints=[
        "Three lines: noise x0 to x_t with the closed form of lesson 01 (the t and noise are "
        "given), ask model(x_t, t) for its guess of the noise, and return the mean squared "
        "error between that guess and the noise.",
        "alpha_bar = torch.cumprod(1 - betas, dim=0); alpha_bar[t] has shape [B]: reshape it to "
        "[B, 1, 1, 1] so that it scales each image. The scale factors are square roots. The "
        "target is the noise, not x0; keep the computation out of torch.no_grad().",
        "x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (reshape alpha_bar[t] to "
        "[B, 1, 1, 1]); return F.mse_loss(model(x_t, t), noise)",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 4: ddpm_step(x_t, eps, t, betas, noise=None) -> x_{t-1}
# --------------------------------------------------------------------------------------------


def _step_case(name, t, seed, schedule="linear", shape=(2, 3, 8, 8), T=1000, hidden=False):
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

    return Case(name, make, verify, hidden=hidden)


def _step_parts(x_t, eps, t, betas, s=None):
    """(mean, beta_t, alpha_bar_t, alpha_bar_{t-1}) in float64, read at index ``s`` (t)."""
    s = t if s is None else s
    alpha_bar = torch.cumprod(1 - betas.double(), dim=0)
    beta, a = betas.double()[s], alpha_bar[s]
    prev = alpha_bar[s - 1] if s > 0 else torch.tensor(1.0, dtype=torch.float64)
    mean = (x_t.double() - beta / (1 - a).sqrt() * eps.double()) / (1 - beta).sqrt()
    return mean, beta, a, prev


def _noise_of(x_t, noise):
    return (torch.randn_like(x_t) if noise is None else noise).double()


def _step_right(x_t, eps, t, betas, noise=None):
    mean, beta, a, prev = _step_parts(x_t, eps, t, betas)
    if t == 0:
        return mean.to(x_t.dtype)
    return (mean + (beta * (1 - prev) / (1 - a)).sqrt() * _noise_of(x_t, noise)).to(x_t.dtype)


def _step_without_noise(x_t, eps, t, betas, noise=None):
    return _step_parts(x_t, eps, t, betas)[0].to(x_t.dtype)


def _step_beta_variance(x_t, eps, t, betas, noise=None):
    mean, beta, _, _ = _step_parts(x_t, eps, t, betas)
    if t == 0:
        return mean.to(x_t.dtype)
    return (mean + beta.sqrt() * _noise_of(x_t, noise)).to(x_t.dtype)


def _step_noise_at_zero(x_t, eps, t, betas, noise=None):
    mean, beta, a, prev = _step_parts(x_t, eps, t, betas)
    # beta_tilde_0 is 0, so noise at t = 0 only shows with sigma^2 = beta_0
    sigma2 = beta if t == 0 else beta * (1 - prev) / (1 - a)
    return (mean + sigma2.sqrt() * _noise_of(x_t, noise)).to(x_t.dtype)


def _step_wrapped_prev(x_t, eps, t, betas, noise=None):
    if t != 0:
        raise ValueError("only t = 0 reads alpha_bar[-1]: not this mistake")
    mean, beta, a, _ = _step_parts(x_t, eps, t, betas)
    prev = torch.cumprod(1 - betas.double(), dim=0)[-1]  # alpha_bar[t - 1] with t = 0
    return (mean + (beta * (1 - prev) / (1 - a)).sqrt() * _noise_of(x_t, noise)).to(x_t.dtype)


def _step_one_based(x_t, eps, t, betas, noise=None):
    s = t - 1  # the paper counts t from 1; the tensors count from 0
    mean, beta, a, prev = _step_parts(x_t, eps, t, betas, s=s)
    if s <= 0:
        return mean.to(x_t.dtype)
    return (mean + (beta * (1 - prev) / (1 - a)).sqrt() * _noise_of(x_t, noise)).to(x_t.dtype)


def _step_mean_with_alpha_bar(x_t, eps, t, betas, noise=None):
    _, beta, a, prev = _step_parts(x_t, eps, t, betas)
    mean = (x_t.double() - beta / (1 - a).sqrt() * eps.double()) / a.sqrt()
    if t == 0:
        return mean.to(x_t.dtype)
    return (mean + (beta * (1 - prev) / (1 - a)).sqrt() * _noise_of(x_t, noise)).to(x_t.dtype)


ddpm_step = Exercise(
    name="ddpm_step",
    function="ddpm_step",
    oracles=_DDPM_SCHEDULER,
    points=2,
    cases=[
        _step_case("t = 999 (pure noise), linear betas", 999, 0),
        _step_case("t = 500", 500, 1),
        _step_case("t = 10: beta_tilde_t is well below beta_t here", 10, 6),
        _step_case("t = 0: the last step adds no noise", 0, 2),
        _step_case("t = 1 (alpha_bar_{t-1} is alpha_bar_0, not 1)", 1, 3, hidden=True),
        _step_case("cosine betas, t = 900, a batch of 8", 900, 4, "squaredcos_cap_v2",
                   (8, 3, 16, 16), hidden=True),
        _step_case("T = 50, t = 25", 25, 5, T=50, hidden=True),
    ],
    mistakes=[
        Mistake("forgot the noise",
                _unless_right(_step_without_noise, _step_right),
                "the answer is the mean alone; every step but the last adds fresh noise, "
                "scaled by sqrt(beta_tilde_t)."),
        Mistake("beta_t instead of beta_tilde_t",
                _unless_right(_step_beta_variance, _step_right),
                "the noise was scaled by sqrt(beta_t) (diffusers' \"fixed_large\"); this step "
                "uses the posterior variance beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / "
                "(1 - alpha_bar_t), which is smaller."),
        Mistake("noise at t = 0",
                _unless_right(_step_noise_at_zero, _step_right),
                "noise was added on the last step too; at t = 0 the step returns the mean, so "
                "that the final image is not noisy."),
        Mistake("alpha_bar[t - 1] wrapped around at t = 0",
                _unless_right(_step_wrapped_prev, _step_right),
                "at t = 0, alpha_bar[t - 1] is alpha_bar[-1], the last entry of the tensor "
                "(Python wraps negative indices); before the first step alpha_bar is 1."),
        Mistake("t off by one",
                _unless_right(_step_one_based, _step_right),
                "beta and alpha_bar were read at t - 1, as with the paper's 1-based timesteps; "
                "here t counts from 0, so step t uses betas[t] and alpha_bar[t]."),
        Mistake("mean divided by sqrt(alpha_bar_t)",
                _unless_right(_step_mean_with_alpha_bar, _step_right),
                "the mean was divided by sqrt(alpha_bar_t); one step back undoes one step of "
                "noise, so it divides by sqrt(alpha_t) = sqrt(1 - beta_t)."),
    ],
    hints=[
        "Two parts: the mean (it needs beta_t, alpha_t = 1 - beta_t and alpha_bar_t), then "
        "sqrt(beta_tilde_t) times the noise added to it, except at t = 0, which returns the "
        "mean.",
        "alpha_bar = torch.cumprod(1 - betas, dim=0). beta_tilde_t needs alpha_bar_{t-1}, which "
        "at t = 0 is 1 (alpha_bar[-1] would be the last entry!). Draw torch.randn_like(x_t) "
        "only when noise is None. Computing in float64 and converting back avoids round-off at "
        "small t.",
        "mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(1 - beta_t); "
        "beta_tilde = beta_t * (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); "
        "x_prev = mean + sqrt(beta_tilde) * noise, and just mean at t = 0",
    ],
)

EXERCISES = [timestep_embedding, resblock_forward, ddpm_loss, ddpm_step]
