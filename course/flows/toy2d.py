"""A 2-D world small enough to see everything: a mixture of Gaussians and its exact velocity field.

Data are points x0 in the plane drawn from a mixture of K isotropic Gaussians,

    p_data = sum_k w_k N(mu_k, c^2 I),

and the path is ``course.diffusion.interpolate``'s: x_sigma = (1 - sigma) x0 + sigma eps. Given
the component k, x_sigma is Gaussian too, so the marginal velocity, the field a perfectly trained
flow network would output, has a closed form (``marginal_velocity``). It differs from the
conditional velocity eps - x0 of one pair: that one is what the network is trained on, this one
is what it learns, the average of the conditional velocities of every pair that passes through x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..diffusion.broadcast import per_image


@dataclass(frozen=True)
class GaussianMixture2D:
    """sum_k w_k N(mu_k, std^2 I) in the plane: ``centres`` [K, 2], ``weights`` [K] summing to 1."""

    centres: torch.Tensor
    std: float
    weights: torch.Tensor

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points [n, 2], float32; the same generator state gives the same points, bitwise."""
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        offsets = torch.randn(n, 2, generator=generator)
        # x0 = mu_k + std * z,  k ~ weights,  z ~ N(0, I)
        return self.centres[component] + self.std * offsets

    def nearest_centre_distance(self, points: torch.Tensor) -> torch.Tensor:
        """Distance [N] from each point [N, 2] to the closest centre: about std * sqrt(pi / 2)
        (the mean of a 2-D Gaussian's radius) for points of the mixture itself."""
        return torch.cdist(points.float(), self.centres).amin(dim=1)


def eight_gaussians(radius: float = 2.0, std: float = 0.15) -> GaussianMixture2D:
    """Eight equal Gaussians evenly spaced on a circle: the classic toy of flow-matching papers.

    radius 2 against noise of std 1 makes the modes clearly apart from each other and from the
    start distribution; std 0.15 makes them tight enough that a blurred sampler shows.
    """
    angles = torch.arange(8) * (2 * math.pi / 8)
    centres = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture2D(centres.float(), float(std), torch.full((8,), 1 / 8))


def marginal_velocity(x: torch.Tensor, sigma, mixture: GaussianMixture2D) -> torch.Tensor:
    """The exact velocity E[eps - x0 | x_sigma = x] of the mixture's path, [N, 2] like x.

    ``sigma``: a float or [N]. Given component k, (x0, eps, x) are jointly Gaussian:

        x | k ~ N(m_k, s_k I),   m_k = (1 - sigma) mu_k,   s_k = (1 - sigma)^2 c^2 + sigma^2
        E[x0 | x, k]  = mu_k + (1 - sigma) c^2 / s_k * (x - m_k)
        E[eps | x, k] = sigma / s_k * (x - m_k)

    so v_k(x) = (sigma - (1 - sigma) c^2) / s_k * (x - m_k) - mu_k, and the marginal velocity
    weights each v_k by the posterior r_k(x) = w_k N(x; m_k, s_k I) / p_sigma(x).
    """
    dtype = x.dtype
    x = x.double()
    sigma = per_image(sigma, x)  # 0-d, or [N, 1] for one sigma per point
    mu = mixture.centres.double()  # [K, 2]
    c2 = mixture.std**2
    # m_k = (1 - sigma) mu_k: [N or 1, K, 2];  s = (1 - sigma)^2 c^2 + sigma^2: [N or 1, 1]
    m = (1 - sigma).unsqueeze(-1) * mu
    s = (1 - sigma) ** 2 * c2 + sigma**2
    offset = x.unsqueeze(1) - m  # x - m_k: [N, K, 2]
    # log r_k = log w_k - |x - m_k|^2 / (2 s) + const (every component has the same s)
    logits = mixture.weights.double().log() - offset.pow(2).sum(-1) / (2 * s)
    r = torch.softmax(logits, dim=1)  # [N, K]
    # v_k = (sigma - (1 - sigma) c^2) / s * (x - m_k) - mu_k
    v_k = ((sigma - (1 - sigma) * c2) / s).unsqueeze(-1) * offset - mu
    # v = sum_k r_k v_k
    return (r.unsqueeze(-1) * v_k).sum(dim=1).to(dtype)
