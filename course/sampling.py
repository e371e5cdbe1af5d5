"""Sampling loops: turn noise into images with a trained noise predictor.

Two loops, both plain Python over the denoising steps:

- ``ddpm_sample`` walks all T steps with ``course.diffusion.ddpm_step`` (lesson 02) and can keep
  a trajectory of x_t and of the model's current guess of x_0 for the scrubber widget;
- ``scheduler_sample`` is the loop every 🤗 diffusers pipeline runs, for any of its schedulers
  (lesson 03): ``set_timesteps``, then ``scale_model_input``, the model, and ``step``.

Images are [N, C, H, W]; the model is called as ``model(x_t, t)`` with t a LongTensor [N].
"""

from __future__ import annotations

from dataclasses import dataclass
from inspect import signature

import torch
from tqdm.auto import tqdm

from .diffusion import alpha_bars, ddim_step, ddpm_step, predict_x0


@dataclass
class Trajectory:
    """Snapshots of a sampling run: ``timesteps`` [K], ``x_t`` and ``x0_hat`` [K, N, C, H, W]."""

    timesteps: list[int]
    x_t: torch.Tensor
    x0_hat: torch.Tensor


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def respace(betas: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep ``steps`` of the T timesteps and the betas that make them one Markov chain.

    With kept timesteps s_0 < s_1 < ... (always 0 and T-1), the chain that jumps straight from
    s_{i-1} to s_i has  beta'_i = 1 - alpha_bar_{s_i} / alpha_bar_{s_{i-1}},  so its alpha_bar
    equals the original at every kept step (Nichol & Dhariwal 2021, section 4). DDPM's own step
    then works unchanged on fewer, bigger steps: the model still sees the original timestep s_i.

    Returns (timesteps [steps] ascending, betas' [steps]).
    """
    T = len(betas)
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in [1, {T}], got {steps}")
    kept = torch.linspace(0, T - 1, steps).round().long()
    alpha_bar = alpha_bars(betas.double())[kept]
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    return kept, (1 - alpha_bar / previous).float()


@torch.no_grad()
def ddpm_sample(model: torch.nn.Module, n: int, betas: torch.Tensor, size: int = 32,
                channels: int = 3, generator: torch.Generator | None = None,
                steps: int | None = None, snapshots: int = 0, step=ddpm_step,
                noise: torch.Tensor | None = None,
                progress: bool = True) -> tuple[torch.Tensor, Trajectory | None]:
    """Ancestral DDPM sampling from pure noise, over all T timesteps or ``steps`` of them.

    The start noise x_T is ``noise`` [n, C, H, W] when given, else drawn with ``generator``,
    which also draws the fresh noise of every step.
    ``snapshots`` > 0 keeps that many evenly spaced (x_t, x0_hat) pairs plus the final image.
    ``step`` is the update rule (a learner's ``ddpm_step`` can be swapped in).
    Returns images [n, channels, size, size] and the trajectory (None without snapshots).
    """
    device = _model_device(model)
    timesteps, chain_betas = respace(betas, steps or len(betas))
    alpha_bar = alpha_bars(chain_betas.double()).float()
    if noise is None:
        noise = torch.randn((n, channels, size, size), generator=generator)
    x = noise.to(device)
    n = len(x)
    K = len(timesteps)
    keep = set(torch.linspace(K - 1, 0, snapshots).round().long().tolist()) if snapshots else set()
    kept_t, kept_x, kept_x0 = [], [], []
    for i in tqdm(range(K - 1, -1, -1), desc="DDPM sampling", disable=not progress,
                  leave=False):
        t = int(timesteps[i])  # the model is asked about the original timestep
        eps = model(x, torch.full((n,), t, device=device, dtype=torch.long))
        if i in keep:
            kept_t.append(t)
            kept_x.append(x.cpu())
            kept_x0.append(predict_x0(x, eps, alpha_bar[i]).clamp(-1, 1).cpu())
        noise = torch.randn(x.shape, generator=generator).to(device) if i > 0 else None
        x = step(x, eps, i, chain_betas, noise=noise)
    trajectory = None
    if snapshots:
        trajectory = Trajectory(kept_t + [-1], torch.stack(kept_x + [x.cpu()]),
                                torch.stack(kept_x0 + [x.cpu().clamp(-1, 1)]))
    return x.cpu(), trajectory


@torch.no_grad()
def ddim_sample(model: torch.nn.Module, noise: torch.Tensor, betas: torch.Tensor, steps: int = 50,
                eta: float = 0.0, generator: torch.Generator | None = None, step=ddim_step,
                progress: bool = False) -> torch.Tensor:
    """DDIM from the start noise x_T [N, C, H, W] in ``steps`` jumps; images [N, C, H, W].

    Timesteps T-1, ..., 0 are evenly spaced ("trailing": the first jump starts at pure noise)
    and the last jump lands on alpha_bar = 1, the clean image. With eta = 0 the result is a
    deterministic function of ``noise``.
    """
    device = _model_device(model)
    T = len(betas)
    alpha_bar = alpha_bars(betas.double()).float()
    timesteps = torch.linspace(T - 1, 0, steps).round().long().tolist()
    x = noise.to(device)
    for i, t in enumerate(tqdm(timesteps, desc="DDIM sampling", disable=not progress,
                               leave=False)):
        eps = model(x, torch.full((len(x),), t, device=device, dtype=torch.long))
        alpha_bar_prev = alpha_bar[timesteps[i + 1]] if i + 1 < steps else torch.tensor(1.0)
        z = torch.randn(x.shape, generator=generator).to(device) if eta > 0 else None
        x = step(x, eps, alpha_bar[t], alpha_bar_prev, eta=eta, noise=z)
    return x.cpu()


@torch.no_grad()
def scheduler_sample(model: torch.nn.Module, scheduler, n: int, steps: int, size: int = 32,
                     channels: int = 3, generator: torch.Generator | None = None,
                     progress: bool = False) -> torch.Tensor:
    """Sample with any diffusers scheduler in ``steps`` model calls; images [n, C, size, size]."""
    device = _model_device(model)
    scheduler.set_timesteps(steps)
    x = torch.randn((n, channels, size, size), generator=generator).to(device)
    x = x * scheduler.init_noise_sigma  # Euler-type schedulers start from a wider Gaussian
    # Stochastic schedulers take a generator; deterministic ones (PNDM, ...) have no such argument.
    extra = {"generator": generator} if "generator" in signature(scheduler.step).parameters else {}
    for t in tqdm(scheduler.timesteps, desc=type(scheduler).__name__, disable=not progress,
                  leave=False):
        model_input = scheduler.scale_model_input(x, t)
        eps = model(model_input, torch.as_tensor(t, device=device).expand(n))  # t may be a float
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return x.cpu()


def module_schedulers() -> dict:
    """The schedulers of lesson 03's benchmark: display name -> diffusers scheduler factory.

    DPM-Solver++ appears twice: as the deterministic multistep solver (diffusers' default) and as
    its stochastic variant, which adds fresh noise at every step as DDPM does.
    """
    from functools import partial

    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        PNDMScheduler,
    )

    return {"DDPM": DDPMScheduler, "DDIM": DDIMScheduler, "PNDM": PNDMScheduler,
            "Euler": EulerDiscreteScheduler, "DPM-Solver++": DPMSolverMultistepScheduler,
            "DPM-Solver++ (SDE)": partial(DPMSolverMultistepScheduler,
                                          algorithm_type="sde-dpmsolver++")}


def compare_schedulers(model: torch.nn.Module, schedulers: dict, step_counts, n: int,
                       reference=("DDPM", 1000), seed: int = 0, T: int = 1000,
                       beta_schedule: str = "linear", progress: bool = True) -> list[dict]:
    """Quality against time for diffusers schedulers at several step counts.

    ``schedulers`` maps a display name to a scheduler class or factory; each (name, steps)
    pair, plus the ``reference`` pair, draws ``n`` images from the same seed. Quality is
    ``course.metrics.sample_quality(images)["clean"]``. Returns one dict per run with keys
    scheduler, steps, seconds_per_image, clean.
    """
    import time

    from .metrics import sample_quality

    runs = [(name, steps) for name in schedulers for steps in step_counts]
    if reference:
        runs.append(tuple(reference))
    rows = []
    for name, steps in tqdm(runs, desc="schedulers", disable=not progress):
        scheduler = schedulers[name](num_train_timesteps=T, beta_schedule=beta_schedule)
        start = time.perf_counter()
        images = scheduler_sample(model, scheduler, n, steps,
                                  generator=torch.Generator().manual_seed(seed))
        seconds = time.perf_counter() - start
        rows.append({"scheduler": name, "steps": steps, "seconds_per_image": seconds / n,
                     "clean": sample_quality(images)["clean"]})
    return rows
