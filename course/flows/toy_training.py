"""One tiny network, two objectives, the same data: flow matching against DDPM's epsilon.

``TinyMLP`` maps a point [N, 2] and a time in [0, 1] to a vector [N, 2]. ``train_flow`` teaches it
the velocity eps - x0 at sigma (``course.diffusion.flow``); ``train_epsilon`` teaches it the noise
eps at t / T of DDPM's linear schedule (``course.diffusion.forward_diffusion``). Both train in a
few seconds on one CPU core, draw every random number from the ``torch.Generator`` they are given
(the initial weights included) and leave the global RNG alone, so a lesson can retrain live and
get the same model every time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..diffusion import forward_diffusion, interpolate, make_beta_schedule, velocity_target
from .toy2d import GaussianMixture2D


class TinyMLP(nn.Module):
    """[N, 2] points and times [N] (or one float) in [0, 1] -> [N, 2].

    The time enters as sin and cos of 2^j pi t (j < ``frequencies``), so the network can bend its
    output quickly in t where the field changes fast (near the data). With hidden = 64 and
    frequencies = 4 it has 4,994 parameters. The initial weights are drawn from ``generator``
    (the global RNG when None), PyTorch's default initialisation either way.
    """

    def __init__(self, hidden: int = 64, frequencies: int = 4,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(frequencies))
        # skip_init: nn.Linear would otherwise draw its weights from the global RNG
        self.net = nn.Sequential(
            nn.utils.skip_init(nn.Linear, 2 + 2 * frequencies, hidden), nn.SiLU(),
            nn.utils.skip_init(nn.Linear, hidden, hidden), nn.SiLU(),
            nn.utils.skip_init(nn.Linear, hidden, 2),
        )
        init_weights(self, generator)

    def forward(self, x: torch.Tensor, time) -> torch.Tensor:
        time = torch.as_tensor(time, dtype=x.dtype).expand(x.shape[0])  # [N]
        angles = time[:, None] * self.freqs  # [N, F]
        features = torch.cat([x, angles.sin(), angles.cos()], dim=1)  # [N, 2 + 2F]
        return self.net(features)


def init_weights(model: nn.Module, generator: torch.Generator | None) -> nn.Module:
    """PyTorch's default ``nn.Linear`` initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
    weights and biases, drawn from ``generator`` instead of the global RNG."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                bound = 1 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return model


@dataclass
class ToyRun:
    """A trained toy model, its loss at every step and the wall-clock seconds training took.

    ``betas`` [T] is the DDPM schedule for an epsilon model, None for a flow model.
    """

    model: TinyMLP
    losses: list[float]
    seconds: float
    betas: torch.Tensor | None = field(default=None, repr=False)


def _train(loss_fn, generator: torch.Generator, steps: int, lr: float, hidden: int) -> ToyRun:
    """Adam with a cosine-decayed learning rate over ``steps`` calls of loss_fn(model)."""
    start = time.perf_counter()
    model = TinyMLP(hidden, generator=generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        decay.step()
        losses.append(loss.item())
    model.eval()
    return ToyRun(model, losses, time.perf_counter() - start)


def train_flow(data: GaussianMixture2D, generator: torch.Generator, steps: int = 3000,
               batch: int = 256, lr: float = 2e-2, hidden: int = 64) -> ToyRun:
    """Flow matching: regress the network at (x_sigma, sigma) onto v = eps - x0.

    sigma ~ U(0, 1): the plain rectified-flow choice. SD3's logit-normal sigmas
    (``course.diffusion.logit_normal_sigmas``) starve the ends of [0, 1], which a few-step
    sampler of this toy visits at every step.
    """

    def loss_fn(model):
        x0 = data.sample(batch, generator)  # [B, 2]
        noise = torch.randn(x0.shape, generator=generator)
        sigma = torch.rand(batch, generator=generator)  # [B]
        x_sigma = interpolate(x0, noise, sigma)
        # L = || v_theta(x_sigma, sigma) - (eps - x0) ||^2
        return (model(x_sigma, sigma) - velocity_target(x0, noise)).pow(2).mean()

    return _train(loss_fn, generator, steps, lr, hidden)


def train_epsilon(data: GaussianMixture2D, generator: torch.Generator, steps: int = 3000,
                  batch: int = 256, lr: float = 2e-2, hidden: int = 64,
                  T: int = 1000) -> ToyRun:
    """DDPM's objective on the same data: regress the network at (x_t, t / T) onto eps.

    The schedule is DDPM's linear one over T steps, diffusers' ``DDPMScheduler`` default; it is
    returned in ``ToyRun.betas`` so the samplers use exactly the schedule the model learnt.
    """
    betas = make_beta_schedule("linear", T)

    def loss_fn(model):
        x0 = data.sample(batch, generator)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, T, (batch,), generator=generator)
        x_t, _ = forward_diffusion(x0, t, betas, noise=noise)
        # L = || eps_theta(x_t, t / T) - eps ||^2
        return (model(x_t, t.float() / T) - noise).pow(2).mean()

    run = _train(loss_fn, generator, steps, lr, hidden)
    run.betas = betas
    return run
