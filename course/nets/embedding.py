"""Sinusoidal timestep embedding: tell the network how noisy its input is.

The same trick as positional encoding in transformers (Vaswani et al. 2017): a timestep t becomes
a vector of sines and cosines at geometrically spaced frequencies, so that nearby timesteps get
similar vectors and a linear layer can read off both coarse and fine differences.

    freq_i    = exp(-ln(max_period) * i / half),      i = 0 .. half-1,  half = dim // 2
    emb(t)    = [cos(t * freq_0), ..., cos(t * freq_{half-1}), sin(t * freq_0), ...]

This is diffusers' ``get_timestep_embedding(t, dim, flip_sin_to_cos=True,
downscale_freq_shift=0)``, the convention of its ``UNet2DModel``.
"""

from __future__ import annotations

import math

import torch


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Embed timesteps t [B] (ints or floats) as float32 vectors [B, dim] (dim even)."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t[None]
    half = dim // 2
    # freq_i = exp(-ln(max_period) * i / half)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs.to(t.device)[None, :]  # [B, half]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
