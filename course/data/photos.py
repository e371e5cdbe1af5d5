"""Real photos that ship with an installed package, so lessons never download an image.

matplotlib bundles a portrait of Grace Hopper in its sample data; that is our test photo.
Images are returned the way diffusion models see them: float32 tensors in [-1, 1], shape [3, H, W].
"""

from __future__ import annotations

import torch
from matplotlib import cbook
from PIL import Image

#: name -> file in matplotlib's sample data
PHOTOS = {"grace_hopper": "grace_hopper.jpg"}


def load_photo(name: str = "grace_hopper", size: int = 128) -> torch.Tensor:
    """Load a bundled photo, centre-cropped to a square and resized to ``size`` x ``size``.

    Returns:
        float32 tensor [3, size, size] with values in [-1, 1] (pixel 0 -> -1, pixel 255 -> 1).
    """
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; available: {sorted(PHOTOS)}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    with cbook.get_sample_data(PHOTOS[name]) as handle:
        image = Image.open(handle).convert("RGB")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    pixels = pixels.view(size, size, 3).permute(2, 0, 1)  # [3, H, W]
    return pixels.float() / 127.5 - 1.0


def to_pil(image: torch.Tensor) -> Image.Image:
    """A [3, H, W] (or [H, W]) tensor in [-1, 1] as a PIL image; values outside are clipped."""
    image = image.detach().float().cpu()
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if pixels.ndim == 3:
        return Image.fromarray(pixels.permute(1, 2, 0).numpy(), mode="RGB")
    return Image.fromarray(pixels.numpy(), mode="L")
