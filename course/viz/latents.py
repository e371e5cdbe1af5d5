"""Pixels and latents side by side: what the VAE keeps, and what noise does to each.

``latent_figure`` is a pure render function (a matplotlib Figure from a pipeline and an image);
``latent_widget`` wires an image slider, a source choice and a noise-level slider to it.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .plots import to_display

#: Sources the widget offers: the shapes world the VAE was trained on, or a real photo.
SOURCES = ("shapes", "photo (grace_hopper)")


def psnr(reconstruction: torch.Tensor, original: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak range 2):
    10 log10(2^2 / MSE). 30 dB and more is hard to tell apart by eye; 20 dB is visibly off."""
    mse = float(((reconstruction.float() - original.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


@torch.no_grad()
def encode_decode(pipe, image: torch.Tensor, t: int = 0, seed: int = 0) -> dict:
    """The round trip of one image [3, H, W] in [-1, 1], clean and noised to timestep ``t``.

    Returns {"pixels", "noisy_pixels", "latents", "noisy_latents", "decoded", "decoded_noisy",
    "alpha_bar"}: images [3, H, W] and scaled latents [4, H/f, W/f] (what the U-Net sees:
    the encoder's mean times ``vae.config.scaling_factor``), on the CPU in float32. Both
    spaces get the same forward process x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,
    with noise drawn from a generator seeded by ``seed``.
    """
    vae = pipe.vae
    scale = vae.config.scaling_factor
    x = image[None].to(vae.device, vae.dtype)
    latents = vae.encode(x).latent_dist.mean * scale  # [1, 4, H/f, W/f]
    alpha_bar = float(pipe.scheduler.alphas_cumprod[t])
    gen = torch.Generator().manual_seed(seed)
    eps_latent = torch.randn(latents.shape, generator=gen).to(latents)
    eps_pixel = torch.randn(x.shape, generator=gen).to(x)
    keep, noise = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    noisy_latents = keep * latents + noise * eps_latent
    decoded = vae.decode(latents / scale).sample
    decoded_noisy = vae.decode(noisy_latents / scale).sample

    def out(tensor):
        return tensor[0].float().cpu()

    return {"pixels": out(x), "noisy_pixels": out(keep * x + noise * eps_pixel),
            "latents": out(latents), "noisy_latents": out(noisy_latents),
            "decoded": out(decoded), "decoded_noisy": out(decoded_noisy), "alpha_bar": alpha_bar}


def latent_figure(pipe, image: torch.Tensor, t: int = 0, seed: int = 0,
                  source: str = "") -> Figure:
    """Two rows of six panels: the pixels, the four latent channels and their decode; clean on
    top, noised to timestep ``t`` below (pixels and latents noised to the same alpha_bar).

    image: [3, H, W] in [-1, 1], H and W divisible by the VAE's factor.
    """
    parts = encode_decode(pipe, image, t, seed)
    pixels, latents = parts["pixels"], parts["latents"]
    n_pixel, n_latent = pixels.numel(), latents.numel()
    limit = 3.0  # scaled latents have about unit spread: +-3 covers nearly all of them
    fig, axes = plt.subplots(2, 2 + latents.shape[0], figsize=(11, 5.2))
    rows = [("", pixels, latents, parts["decoded"]),
            (" noised", parts["noisy_pixels"], parts["noisy_latents"], parts["decoded_noisy"])]
    for r, (tag, px, z, dec) in enumerate(rows):
        axes[r, 0].imshow(to_display(px), interpolation="nearest")
        detail = f"PSNR {psnr(px, pixels):.1f} dB" if r else "x".join(map(str, px.shape))
        axes[r, 0].set_title(f"pixels{tag}\n{detail}", fontsize=8)
        for c in range(z.shape[0]):
            axes[r, 1 + c].imshow(z[c].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit,
                                  interpolation="nearest")
            axes[r, 1 + c].set_title(f"latent ch {c}{tag}\nstd {z[c].std():.2f}", fontsize=8)
        axes[r, -1].imshow(to_display(dec), interpolation="nearest")
        axes[r, -1].set_title(f"decode{tag}\nPSNR {psnr(dec, pixels):.1f} dB", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    what = f"{source}: " if source else ""
    fig.suptitle(f"{what}{n_pixel:,} pixel values -> {n_latent:,} latent values "
                 f"({n_pixel / n_latent:g}x fewer);  lower row: t = {t}, "
                 f"alpha_bar = {parts['alpha_bar']:.3f}", fontsize=9)
    fig.tight_layout()
    return fig


def pick_image(source: str, seed: int, size: int = 32) -> torch.Tensor:
    """The image [3, size, size] the widget shows: shapes image number ``seed``, or the photo."""
    if source == SOURCES[1]:
        from ..data.photos import load_photo

        return load_photo("grace_hopper", size=size)
    from ..data.shapes import shapes_dataset

    images, _ = shapes_dataset(1, seed=seed, size=size)
    return images[0]


def latent_widget(pipe, seed: int = 0, t: int = 0, source: str = SOURCES[0]):
    """Image seed, source and timestep controls over :func:`latent_figure` (CSS class
    "course-latents"). ``pipe``: a StableDiffusionPipeline with a VAE and a scheduler that has
    ``alphas_cumprod`` (the bundled tiny one: ``latent_widget(load_pipeline("tiny-shapes"))``).
    """
    import ipywidgets as widgets

    from .widgets import picture_widget

    last = int(pipe.scheduler.config.num_train_timesteps) - 1
    seed_slider = widgets.IntSlider(value=seed, min=0, max=99, description="image seed",
                                    continuous_update=False)
    source_choice = widgets.Dropdown(options=list(SOURCES), value=source, description="source")
    t_slider = widgets.IntSlider(value=t, min=0, max=last, step=10, description="timestep t",
                                 continuous_update=False, layout=widgets.Layout(width="380px"))

    def draw():
        image = pick_image(source_choice.value, seed_slider.value)
        return latent_figure(pipe, image, t_slider.value, seed_slider.value,
                             source=source_choice.value)

    return picture_widget("course-latents", [source_choice, seed_slider, t_slider], draw)
