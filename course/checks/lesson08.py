"""Checks for lesson 08, flow matching and rectified flow.

Oracles, all from diffusers: the training loss its SD3 and FLUX scripts compute
(``FlowMatchEulerDiscreteScheduler.scale_noise`` for the noisy input, ``noise - x0`` as the
target, ``compute_loss_weighting_for_sd3`` for the weights); the sampling loop every flow
pipeline runs (``FlowMatchEulerDiscreteScheduler(shift=...)``, ``set_timesteps``, ``step``);
and the training times ``compute_density_for_timestep_sampling(weighting_scheme="logit_normal")``
draws, compared as distributions (quantiles of a large draw), not value by value.

The known mistakes are the slips the lesson warns about, written out here with plain torch, so
that a failed case can say which one the answer equals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cases import Case, Mistake, seeded
from .catalog import hint
from .exercise import Exercise
from .judging import compare_tensor
from .oracles import diffusers_quiet

__all__ = ["EXERCISES", "flow_matching_loss", "flow_sample", "hint", "logit_normal_timesteps"]


def _scheduler(shift: float = 1.0):
    """diffusers' flow-matching Euler scheduler, as SD3's pipeline configures it (``shift``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def _per_image(sigma, x):
    """sigma (a float or [B]) shaped [B, 1, ..., 1] to broadcast against x [B, ...]."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.reshape(-1, *([1] * (x.ndim - 1))) if sigma.ndim else sigma


class _ProbeVelocity(torch.nn.Module):
    """A fixed, cheap stand-in for a flow network: v(x [B, C, H, W], sigma [B] or float).

    It depends on x and on sigma, so a wrong noisy input or a wrong time shows in its output.
    Its weights come from a seeded generator of its own (the learner's global RNG is left alone).
    """

    def __init__(self, channels: int = 3):
        super().__init__()
        gen = seeded(8)
        fan_in = channels * 9
        self.weight = torch.nn.Parameter(torch.randn(channels, channels, 3, 3, generator=gen)
                                         / fan_in**0.5)

    def forward(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1)
        s = s.expand(len(x)) if s.numel() == 1 else s
        s = s.view(-1, *([1] * (x.ndim - 1)))
        if x.ndim == 4:
            mixed = F.conv2d(x, self.weight, padding=1)
        else:  # points [N, 2]: mix the coordinates with the first 2 x 2 block
            mixed = x @ self.weight[:2, :2, 1, 1]
        # looks like a velocity field: noise-like at sigma = 1, bent by x everywhere
        return 0.8 * x - (1 - s) * torch.tanh(1.5 * mixed + 0.3) + 0.2 * s


# --------------------------------------------------------------------------------------------
# Exercise 1: flow_matching_loss(predict, x0, noise, sigma)
# --------------------------------------------------------------------------------------------


def _loss_case(name, seed, shape, indices, hidden=False):
    """Training sigmas taken, as diffusers' SD3 script takes them, from the training scheduler's
    own grid (``indices`` into its timesteps), so that ``scale_noise`` finds them."""

    def make():
        gen = seeded(seed)
        sigmas = _scheduler().sigmas
        return {"predict": _ProbeVelocity(shape[1]), "x0": torch.randn(shape, generator=gen),
                "noise": torch.randn(shape, generator=gen),
                "sigma": sigmas[torch.tensor(indices)].clone()}

    def verify(inputs, got):
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        scheduler = _scheduler()
        x0, noise, predict = inputs["x0"], inputs["noise"], inputs["predict"]
        timesteps = scheduler.timesteps[torch.tensor(indices)]
        with torch.no_grad(), diffusers_quiet():
            # diffusers' SD3/FLUX scripts: noisy input, target noise - x0, weights (ones)
            noisy = scheduler.scale_noise(x0, timesteps, noise)
            target = noise - x0
            pred = predict(noisy, inputs["sigma"])
            weighting = compute_loss_weighting_for_sd3("logit_normal", inputs["sigma"])
            weighting = _per_image(weighting, x0)
            expected = torch.mean((weighting.float() * (pred.float() - target.float()) ** 2)
                                  .reshape(target.shape[0], -1), 1).mean()
        if isinstance(got, torch.Tensor):
            got = got.detach()
        return compare_tensor("loss", got, expected, atol=1e-5, rtol=1e-4)

    return Case(name, make, verify, hidden=hidden)


def _flow_loss(predict, x0, noise, sigma, data_at=0.0, target="velocity", broadcast=True):
    """The loss, right with the defaults; each option is one of the known slips."""
    s = _per_image(sigma, x0) if broadcast else sigma
    if data_at == 0.0:
        x = (1 - s) * x0 + s * noise
    else:  # Lipman's convention: sigma = 1 is data
        x = s * x0 + (1 - s) * noise
    aim = {"velocity": noise - x0, "reversed": x0 - noise, "noise": noise}[target]
    with torch.no_grad():
        return ((predict(x, sigma) - aim) ** 2).mean()


def _target_reversed(predict, x0, noise, sigma):
    return _flow_loss(predict, x0, noise, sigma, target="reversed")


def _time_flipped(predict, x0, noise, sigma):
    return _flow_loss(predict, x0, noise, sigma, data_at=1.0)


def _noise_target(predict, x0, noise, sigma):
    return _flow_loss(predict, x0, noise, sigma, target="noise")


def _sigma_not_broadcast(predict, x0, noise, sigma):
    return _flow_loss(predict, x0, noise, sigma, broadcast=False)


flow_matching_loss = Exercise(
    name="flow_matching_loss",
    function="flow_matching_loss",
    points=2,
    oracles=("diffusers.FlowMatchEulerDiscreteScheduler", "diffusers.training_utils",
             "diffusers.schedulers"),
    cases=[
        _loss_case("4 images at 4 noise levels, [4, 3, 8, 8]", 0, (4, 3, 8, 8),
                   [0, 250, 500, 900]),
        _loss_case("a batch of 4 whose last axis is also 4, [4, 3, 6, 4]", 1, (4, 3, 6, 4),
                   [999, 700, 300, 10]),
        _loss_case("2 latents [2, 4, 8, 8], one nearly pure noise", 2, (2, 4, 8, 8), [1, 600],
                   hidden=True),
        _loss_case("8 images, every sigma from the far ends to the middle", 3, (8, 3, 4, 4),
                   [0, 999, 500, 100, 900, 50, 950, 450], hidden=True),
        _loss_case("one image [1, 3, 16, 16] at sigma = 0.5", 4, (1, 3, 16, 16), [500],
                   hidden=True),
    ],
    mistakes=[
        Mistake("target x0 - noise", _target_reversed,
                "the regression target was x0 - noise; the velocity of x_sigma = (1 - sigma) x0 "
                "+ sigma noise is its derivative in sigma, noise - x0. With x0 - noise the "
                "network learns the field backwards and its samples run away from the data."),
        Mistake("time convention flipped", _time_flipped,
                "the noisy input was sigma x0 + (1 - sigma) noise: sigma = 1 was the data. In "
                "diffusers' convention (SD3, FLUX) sigma = 1 is pure noise; the flipped one is "
                "Lipman's t = 1 - sigma, which needs its own target and sampler."),
        Mistake("noise predicted instead of the velocity", _noise_target,
                "the target was the noise itself, DDPM's epsilon objective; flow matching "
                "regresses the velocity noise - x0 of the straight path."),
        Mistake("sigma not broadcast per image", _sigma_not_broadcast,
                "sigma [B] was multiplied with [B, C, H, W] tensors as it is, so it lined up "
                "with the last axis (width) instead of the batch; reshape it to [B, 1, 1, 1] "
                "first (an error when the shapes do not broadcast, silently wrong when they do)."),
    ],
    hints=[
        "Three lines: put each image at its noise level on the straight line between data and "
        "noise, ask the network for the velocity there, and take the mean squared error against "
        "the velocity of that line.",
        "sigma has one value per image, [B]: s = sigma.view(-1, 1, 1, 1) broadcasts it. The "
        "noisy input is (1 - s) x0 + s noise (sigma = 1 is noise), the network is "
        "predict(x_sigma, sigma), and the target is d x_sigma / d sigma.",
        "s = sigma.view(-1, 1, 1, 1); x_sigma = (1 - s) * x0 + s * noise; "
        "return ((predict(x_sigma, sigma) - (noise - x0)) ** 2).mean()",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 2: flow_sample(velocity, x1, steps, shift=1.0, sigma_min=0.001)
# --------------------------------------------------------------------------------------------


def _sample_case(name, seed, shape, steps, shift, hidden=False):
    def make():
        return {"velocity": _ProbeVelocity(shape[1] if len(shape) == 4 else 3),
                "x1": torch.randn(shape, generator=seeded(seed)), "steps": steps,
                "shift": shift, "sigma_min": _scheduler(shift).sigma_min}

    def verify(inputs, got):
        # The loop of diffusers' flow pipelines (SD3, FLUX), with the probe as the network.
        scheduler = _scheduler(shift)
        velocity, x = inputs["velocity"], inputs["x1"]
        with torch.no_grad(), diffusers_quiet():
            scheduler.set_timesteps(steps)
            for i, t in enumerate(scheduler.timesteps):
                v = velocity(x, float(scheduler.sigmas[i]))
                x = scheduler.step(v, t, x).prev_sample
        if isinstance(got, torch.Tensor):
            got = got.detach()
        return compare_tensor("final sample", got, x, atol=1e-4, rtol=1e-3)

    return Case(name, make, verify, hidden=hidden)


def _sigmas(steps, shift, sigma_min, shifted=True, down_to_zero=False):
    """diffusers' inference sigmas [steps + 1] (right with the defaults)."""
    if down_to_zero:
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    s = torch.linspace(1.0, sigma_min, steps, dtype=torch.float64)
    if shifted:
        s = shift * s / (1 + (shift - 1) * s)
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


def _euler(velocity, x1, sigmas, step="right"):
    x = x1
    with torch.no_grad():
        for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            v = velocity(x, sigma)
            if step == "right":
                x = x + (sigma_next - sigma) * v
            elif step == "sign":
                x = x - (sigma_next - sigma) * v
            else:  # dt = sigma: a jump to the data estimate x - sigma v at every step
                x = x - sigma * v
    return x


def _sign_flipped(velocity, x1, steps, shift=1.0, sigma_min=0.001):
    return _euler(velocity, x1, _sigmas(steps, shift, sigma_min), step="sign")


def _from_sigma_zero(velocity, x1, steps, shift=1.0, sigma_min=0.001):
    return _euler(velocity, x1, _sigmas(steps, shift, sigma_min).flip(0))


def _no_shift(velocity, x1, steps, shift=1.0, sigma_min=0.001):
    return _euler(velocity, x1, _sigmas(steps, shift, sigma_min, shifted=False))


def _dt_is_sigma(velocity, x1, steps, shift=1.0, sigma_min=0.001):
    return _euler(velocity, x1, _sigmas(steps, shift, sigma_min), step="sigma")


def _evenly_to_zero(velocity, x1, steps, shift=1.0, sigma_min=0.001):
    return _euler(velocity, x1, _sigmas(steps, shift, sigma_min, down_to_zero=True))


flow_sample = Exercise(
    name="flow_sample",
    function="flow_sample",
    points=2,
    oracles=("diffusers.FlowMatchEulerDiscreteScheduler", "diffusers.schedulers",
             "diffusers.*Scheduler*"),
    cases=[
        _sample_case("4 steps, shift 1, [2, 3, 8, 8]", 0, (2, 3, 8, 8), 4, 1.0),
        _sample_case("8 steps, shift 3 (SD3's), [2, 3, 8, 8]", 1, (2, 3, 8, 8), 8, 3.0),
        _sample_case("1 step: straight from noise to the data estimate", 2, (3, 3, 4, 4), 1,
                     1.0, hidden=True),
        _sample_case("25 steps, shift 3, 256 points [256, 2]", 3, (256, 2), 25, 3.0,
                     hidden=True),
        _sample_case("6 steps, shift 1.5, latents [1, 4, 8, 8]", 4, (1, 4, 8, 8), 6, 1.5,
                     hidden=True),
    ],
    mistakes=[
        Mistake("Euler step's sign flipped", _sign_flipped,
                "each step moved x by -(sigma_next - sigma) v, i.e. along +v, towards the noise; "
                "sigma falls while sampling, so sigma_next - sigma is negative and "
                "x + (sigma_next - sigma) v already moves towards the data."),
        Mistake("started from sigma = 0", _from_sigma_zero,
                "the loop ran its sigmas upwards, from 0 to 1: Lipman's t-from-0-to-1 loop on a "
                "network that learnt diffusers' convention. The start noise x1 sits at "
                "sigma = 1; walk down to 0."),
        Mistake("shift forgotten", _no_shift,
                "the sigmas were evenly spaced but never shifted; apply "
                "shift * s / (1 + (shift - 1) * s) to every one before appending the final 0 "
                "(shift = 1 changes nothing, which is why a shift-1 case passes)."),
        Mistake("step size sigma instead of sigma_next - sigma", _dt_is_sigma,
                "each step was x - sigma v, which is the data estimate x0_hat at that sigma, not "
                "a step to sigma_next; Euler moves by (sigma_next - sigma) v."),
        Mistake("evenly spaced down to 0", _evenly_to_zero,
                "the sigmas were linspace(1, 0, steps + 1); diffusers spaces `steps` sigmas "
                "from 1 down to sigma_min (its smallest training sigma), shifts them and then "
                "appends 0, so its last step always runs from sigma_min to 0."),
    ],
    hints=[
        "Two parts: the list of noise levels (diffusers' set_timesteps), then Euler's method on "
        "dx/dsigma = v along it, from the noise x1 at sigma = 1 to the data at sigma = 0.",
        "sigmas = torch.linspace(1, sigma_min, steps), then shift * s / (1 + (shift - 1) * s), "
        "then append a 0: steps + 1 values. For each consecutive pair (sigma, sigma_next): "
        "v = velocity(x, sigma) and the step is x + (sigma_next - sigma) v (sigma falls, so "
        "the step is negative).",
        "s = torch.linspace(1.0, sigma_min, steps); s = shift * s / (1 + (shift - 1) * s); "
        "sigmas = torch.cat([s, torch.zeros(1)]).tolist(); x = x1; for sigma, sigma_next in "
        "zip(sigmas[:-1], sigmas[1:]): x = x + (sigma_next - sigma) * velocity(x, sigma); "
        "return x",
    ],
)


# --------------------------------------------------------------------------------------------
# Exercise 3: logit_normal_timesteps(n, generator, mean=0.0, std=1.0)
# --------------------------------------------------------------------------------------------

#: Where the learner's draw and diffusers' are compared, and how far apart their quantiles may
#: be: with 200,000 draws a quantile's standard error is below 0.003 everywhere in this range.
QUANTILES = torch.tensor([0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99])
QUANTILE_TOLERANCE = 0.01


def _times_case(name, seed, mean, std, n=200_000, hidden=False):
    def make():
        inputs = {"n": n, "generator": seeded(seed)}
        if (mean, std) != (0.0, 1.0):
            inputs.update(mean=mean, std=std)
        return inputs

    def verify(inputs, got):
        from diffusers.training_utils import compute_density_for_timestep_sampling

        if not isinstance(got, torch.Tensor):
            return f"expected a torch.Tensor of {n} times, got {type(got).__name__}"
        if got.shape != (n,):
            return f"expected shape [{n}], got {list(got.shape)}"
        if got.dtype != torch.float32:
            return f"expected dtype torch.float32, got {got.dtype}"
        got = got.detach().cpu()
        if not bool(torch.isfinite(got).all()):
            return "some times are NaN or inf"
        low, high = float(got.min()), float(got.max())
        if low < 0 or high > 1:
            return (f"times must lie in [0, 1] (sigma = 0 data, 1 noise); got values from "
                    f"{low:.3g} to {high:.3g}")
        # diffusers' own draw, from a generator of its own: the same density, other values
        with diffusers_quiet():
            theirs = compute_density_for_timestep_sampling(
                "logit_normal", n, logit_mean=mean, logit_std=std,
                generator=seeded(10_000 + seed))
        ours_q = torch.quantile(got.double(), QUANTILES.double())
        theirs_q = torch.quantile(theirs.double(), QUANTILES.double())
        gap = (ours_q - theirs_q).abs()
        if float(gap.max()) > QUANTILE_TOLERANCE:
            worst = int(gap.argmax())
            table = ", ".join(f"{float(p):.2f}: {float(a):.3f} vs {float(b):.3f}"
                              for p, a, b in zip(QUANTILES, ours_q, theirs_q))
            return (f"the times do not follow the logit-normal density (mean {mean:g}, std "
                    f"{std:g}): the {float(QUANTILES[worst]):.0%} quantile is "
                    f"{float(ours_q[worst]):.3f}, diffusers' draw has {float(theirs_q[worst]):.3f} "
                    f"(quantiles, yours vs diffusers': {table})")
        return None

    return Case(name, make, verify, hidden=hidden)


def _uniform(n, generator, mean=0.0, std=1.0):
    return torch.rand(n, generator=generator)


def _normal_without_sigmoid(n, generator, mean=0.0, std=1.0):
    return torch.randn(n, generator=generator) * std + mean


def _sigmoid_of_uniform(n, generator, mean=0.0, std=1.0):
    return torch.sigmoid(torch.rand(n, generator=generator) * std + mean)


def _std_ignored(n, generator, mean=0.0, std=1.0):
    return torch.sigmoid(torch.randn(n, generator=generator) + mean)


logit_normal_timesteps = Exercise(
    name="logit_normal_timesteps",
    function="logit_normal_timesteps",
    points=1,
    oracles=("diffusers.training_utils", "diffusers.compute_density_for_timestep_sampling"),
    cases=[
        _times_case("SD3's default: mean 0, std 1", 0, 0.0, 1.0),
        _times_case("mean 0.5, std 1 (towards noise)", 1, 0.5, 1.0),
        _times_case("mean -0.5, std 0.5", 2, -0.5, 0.5, hidden=True),
        _times_case("mean 0, std 2: more weight at both ends", 3, 0.0, 2.0, hidden=True),
    ],
    mistakes=[
        Mistake("uniform times", _uniform,
                "the times were uniform on [0, 1], the plain rectified-flow choice; SD3 draws "
                "u ~ N(mean, std^2) and squashes it with the sigmoid, which puts most times in "
                "the middle."),
        Mistake("normal without the sigmoid", _normal_without_sigmoid,
                "the answer is u ~ N(mean, std^2) itself, which is not even in [0, 1]; the time "
                "is sigmoid(u)."),
        Mistake("sigmoid of a uniform", _sigmoid_of_uniform,
                "the answer squashed a uniform number, so every time lies between sigmoid(mean) "
                "and sigmoid(mean + std); the number inside the sigmoid must be Gaussian."),
        Mistake("std ignored", _std_ignored,
                "the Gaussian inside the sigmoid had standard deviation 1 whatever std was; "
                "scale it: u = mean + std * z."),
    ],
    hints=[
        "'Logit-normal' means: the logit of the time, log(s / (1 - s)), is normally "
        "distributed. So draw a Gaussian number and map it back through the inverse of the "
        "logit.",
        "Draw z with torch.randn(n, generator=generator) (use the generator you are given), "
        "make it u = mean + std * z, and the time is torch.sigmoid(u).",
        "return torch.sigmoid(mean + std * torch.randn(n, generator=generator))",
    ],
)

EXERCISES = [flow_matching_loss, flow_sample, logit_normal_timesteps]
