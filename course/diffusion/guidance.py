"""Classifier-free guidance (Ho and Salimans, 2022): one network, two predictions, one blend.

A text-to-image model trained with conditioning dropout (the caption replaced by the empty prompt
for a share of the examples) is two models in one set of weights: with the prompt it predicts
eps(x_t | c), with "" it predicts eps(x_t). Guidance extrapolates from the second past the first:

    eps_hat = eps_uncond + w * (eps_cond - eps_uncond)

w = 1 is the conditional model alone, w = 0 the unconditional one, w > 1 pushes further in the
direction the prompt adds. This is diffusers' convention (``guidance_scale`` of its pipelines)
and Imagen's (Saharia et al. 2022, eq. 2: w eps_cond + (1 - w) eps_uncond); Ho and Salimans
write (1 + w') eps_cond - w' eps_uncond, so their w' = w - 1.

The blend is linear, so it holds for any parametrisation that is linear in the noise for a fixed
x_t: epsilon, v (SD 2's 768-v models, the course's tiny pipeline) and x0 predictions alike.
"""

from __future__ import annotations

import torch


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale) -> torch.Tensor:
    """eps_uncond + w (eps_cond - eps_uncond), the guided prediction.

    Args:
        eps_uncond: the model's prediction [B, C, H, W] for the empty (or negative) prompt.
        eps_cond: its prediction [B, C, H, W] for the prompt.
        guidance_scale: w, a float, or a tensor that broadcasts ([B, 1, 1, 1]: one w per image).

    Returns:
        [B, C, H, W], in the dtype of the predictions.
    """
    w = torch.as_tensor(guidance_scale, dtype=eps_cond.dtype, device=eps_cond.device)
    return eps_uncond + w * (eps_cond - eps_uncond)
