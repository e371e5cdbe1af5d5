"""One value per image, shaped to scale whole images: the broadcast each step of the maths needs."""

from __future__ import annotations

import torch


def per_image(value, like: torch.Tensor) -> torch.Tensor:
    """A float, a 0-d tensor or a [B] tensor, as a tensor that broadcasts over ``like`` [B, ...].

    [B] becomes [B, 1, 1, 1] for images [B, C, H, W], so value[i] scales image i alone; a single
    value stays 0-d and scales every image. Returned in ``like``'s dtype and on its device.
    """
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.ndim == 1:
        value = value.view(-1, *[1] * (like.ndim - 1))
    return value
