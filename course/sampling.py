"""Sampling loops: turn noise into images with a trained noise predictor.

Two loops, both plain Python over the denoising steps:

- ``ddpm_sample`` walks all T steps with ``course.diffusion.ddpm_step`` (lesson 02) and can keep
  a trajectory of x_t and of the model's current guess of x_0 for the scrubber widget;
- ``scheduler_sample`` is the loop every 🤗 diffusers pipeline runs, for any of its schedulers
  (lesson 03): ``set_timesteps``, then ``scale_model_input``, the model, and ``step``.

Lesson 03's scheduler comparison lives here too: ``module_schedulers`` (the one list of schedulers
for the lesson and the benchmark), ``compare_schedulers`` (quality, model evaluations and time per
image) and ``load_quality_table`` (the comparison measured at full size, shipped as data).

Images are [N, C, H, W]; the model is called as ``model(x_t, t)`` with t a LongTensor [N].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from inspect import signature
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .diffusion import alpha_bars, ddim_step, ddpm_step, predict_x0
from .models.registry import ASSETS


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
    deterministic function of ``noise`` (bit for bit on a CPU; on a GPU, only under
    ``torch.use_deterministic_algorithms(True)``, else equal up to the last bits).
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
    """Sample ``n`` images [n, C, size, size] with any diffusers scheduler set to ``steps`` steps.

    The model is called once per entry of ``scheduler.timesteps``, which ``set_timesteps(steps)``
    fills. For most schedulers (DDPM, DDIM, Euler, DPM-Solver++) that is ``steps`` calls, but not
    for all: ``PNDMScheduler``'s default starts with Runge-Kutta steps (PRK) of four model calls
    each, so 10 steps cost 19 calls (with ``skip_prk_steps=True``, 11); Heun's method calls the
    model twice per step but the last (19 calls for 10 steps as well). Wrap the model in
    :class:`CountingModel` to count the calls (NFE).
    The start noise, and the fresh noise of stochastic schedulers, come from ``generator``.
    """
    device = _model_device(model)
    scheduler.set_timesteps(steps)
    x = torch.randn((n, channels, size, size), generator=generator).to(device)
    x = x * scheduler.init_noise_sigma  # an attribute: Euler-type schedulers start wider than 1
    # Stochastic schedulers take a generator; deterministic ones (PNDM, ...) have no such argument.
    extra = {"generator": generator} if "generator" in signature(scheduler.step).parameters else {}
    for t in tqdm(scheduler.timesteps, desc=type(scheduler).__name__, disable=not progress,
                  leave=False):
        model_input = scheduler.scale_model_input(x, t)
        eps = model(model_input, torch.as_tensor(t, device=device).expand(n))  # t may be a float
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return x.cpu()


class CountingModel(torch.nn.Module):
    """A noise predictor that counts how often it is called: ``calls`` is the sampler's NFE.

    NFE, the number of function (model) evaluations, is what a sampler costs: one call of the
    wrapped model on a batch counts once, since every image in the batch takes that step.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x, t)


def module_schedulers() -> dict:
    """The schedulers of lesson 03 and its benchmark: display name -> diffusers scheduler factory.

    Each factory takes ``num_train_timesteps`` and ``beta_schedule`` (and any other config).

    - PNDM runs with ``skip_prk_steps=True``, as Stable Diffusion's own scheduler config does:
      only its linear multistep part (PLMS), one model call per step plus one at the start.
      diffusers' default would begin with Runge-Kutta steps of four calls each (19 calls for
      10 steps), which compares it with the others at unequal cost.
    - DPM-Solver++ appears twice: as the deterministic multistep solver (diffusers' default) and
      as its stochastic variant, which adds fresh noise at every step as DDPM does.
    """
    from functools import partial

    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        PNDMScheduler,
    )

    return {"DDPM": DDPMScheduler, "DDIM": DDIMScheduler,
            "PNDM": partial(PNDMScheduler, skip_prk_steps=True),
            "Euler": EulerDiscreteScheduler, "DPM-Solver++": DPMSolverMultistepScheduler,
            "DPM-Solver++ (SDE)": partial(DPMSolverMultistepScheduler,
                                          algorithm_type="sde-dpmsolver++")}


def describe_scheduler(factory) -> str:
    """``PNDMScheduler(skip_prk_steps=True)`` for a class or a ``functools.partial`` of one."""
    func = getattr(factory, "func", factory)
    options = ", ".join(f"{k}={v!r}" for k, v in getattr(factory, "keywords", {}).items())
    return f"{func.__name__}({options})"


def compare_schedulers(model: torch.nn.Module, schedulers: dict, step_counts, n: int,
                       reference=("DDPM", 1000), seed: int = 0, T: int = 1000,
                       beta_schedule: str = "linear", progress: bool = True) -> list[dict]:
    """Quality, cost and time of diffusers schedulers at several step counts.

    ``schedulers`` maps a display name to a scheduler class or factory; each (name, steps)
    pair, plus the ``reference`` pair when given, draws ``n`` images in one batch from the same
    seed. Returns one dict per run:

    - ``scheduler``, ``steps``: the display name and the ``num_inference_steps`` asked for;
    - ``nfe``: model calls counted while sampling (not a formula: PNDM, Heun, ... differ);
    - ``clean``: ``course.metrics.sample_quality(images)["clean"]``, the share of images that
      are one clean shape;
    - ``ms_per_image``: wall-clock time of the run divided by ``n``, on the model's device.
    """
    import time

    from .metrics import sample_quality

    runs = [(name, steps) for name in schedulers for steps in step_counts]
    if reference:
        runs.append(tuple(reference))
    counter = CountingModel(model)
    with torch.no_grad():  # warm-up: the first call pays for allocations and kernel choices
        device = _model_device(model)
        model(torch.zeros(n, 3, 32, 32, device=device), torch.zeros(n, dtype=torch.long,
                                                                    device=device))
    rows = []
    for name, steps in tqdm(runs, desc="schedulers", disable=not progress):
        scheduler = schedulers[name](num_train_timesteps=T, beta_schedule=beta_schedule)
        counter.calls = 0
        start = time.perf_counter()
        images = scheduler_sample(counter, scheduler, n, steps, progress=progress,
                                  generator=torch.Generator().manual_seed(seed))
        seconds = time.perf_counter() - start  # .cpu() at the end waited for the device
        rows.append({"scheduler": name, "steps": steps, "nfe": counter.calls,
                     "clean": sample_quality(images)["clean"], "ms_per_image": 1000 * seconds / n})
    return rows


#: Lesson 03's scheduler comparison at full size, written by ``python -m course bench --quality``.
QUALITY_TABLE = ASSETS / "scheduler_quality.json"


def load_quality_table(path: str | Path = QUALITY_TABLE) -> dict:
    """The shipped scheduler comparison: date, machine, versions, device, n_images, command, rows.

    Rows have the keys of :func:`compare_schedulers`: scheduler, steps, nfe, clean, ms_per_image.
    """
    return json.loads(Path(path).read_text(encoding="utf-8"))


def format_rows(rows: list[dict]) -> str:
    """A comparison table as aligned text: scheduler, steps, NFE, % clean, ms per image."""
    lines = [f"{'scheduler':<20}{'steps':>6}{'NFE':>6}{'clean':>8}{'ms / image':>12}"]
    lines += [f"{r['scheduler']:<20}{r['steps']:>6}{r['nfe']:>6}{r['clean']:>8.1%}"
              f"{r['ms_per_image']:>12.1f}" for r in rows]
    return "\n".join(lines)


def describe_table(table: dict) -> str:
    """Where a shipped table comes from, in one line: date, machine, versions, size, command."""
    machine = table["machine"]
    where = machine.get("gpu") or f"{machine['cpu_count']}-core CPU"
    versions = ", ".join(f"{k} {v}" for k, v in table["versions"].items())
    return (f"Measured {table['date']} on {machine['platform']}, {where} "
            f"(device {table['device']}; {versions}), {table['n_images']} images a row. "
            f"Reproduce: {table['command']}")
