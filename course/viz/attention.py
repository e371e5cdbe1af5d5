"""Pictures for lesson 04: CLIP's similarity matrix and per-token cross-attention maps.

Pure render functions (tensors in, a matplotlib Figure out) and one thin widget over them.
Images are tensors in [-1, 1], [3, H, W] or [B, 3, H, W].
"""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .plots import to_display
from .widgets import picture_widget


def similarity_figure(similarity: torch.Tensor, images: torch.Tensor, captions: list[str],
                      title: str = "cosine similarity") -> Figure:
    """An images x captions heat map, the images drawn as the row labels.

    similarity: [n, m]; images: [n, 3, H, W]; captions: m strings. The highest entry of each row
    is outlined: the caption that image would be classified as.
    """
    similarity = similarity.detach().float().cpu()
    n, m = similarity.shape
    fig = plt.figure(figsize=(1.2 + 0.55 * m, 0.9 + 0.5 * n))
    grid = fig.add_gridspec(1, 2, width_ratios=(0.6, m), wspace=0.02)
    strip, ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    strip.imshow(to_display(torch.cat(list(images[:n]), dim=1)), aspect="auto",
                 interpolation="nearest")
    strip.axis("off")
    heat = ax.imshow(similarity, cmap="viridis", aspect="auto", vmin=-1, vmax=1)
    for row, col in enumerate(similarity.argmax(1).tolist()):
        ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="white",
                                   linewidth=2))
    ax.set_xticks(range(m), captions, rotation=60, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.colorbar(heat, ax=ax, fraction=0.03, pad=0.01)
    return fig


def attention_maps_figure(image: torch.Tensor, maps: torch.Tensor, labels: list[str],
                          token_index: int, step_index: int, timesteps: list[int],
                          title: str | None = None) -> Figure:
    """One token's cross-attention at one sampling step, over the generated image.

    image: [3, H, W]; maps: [S, K, h, w] (per step, per token; any size, drawn over the whole
    image); labels: K token names.
    Top: the image and the chosen map laid over it. Bottom: every token's map at this step on
    one colour scale, the chosen one framed, with its share of the step's attention.
    """
    maps = maps.detach().float().cpu()
    step_maps = maps[step_index]  # [K, H, W]
    chosen = step_maps[token_index]
    k = len(labels)
    fig = plt.figure(figsize=(max(6.0, 1.1 * k), 5.2))
    grid = fig.add_gridspec(2, k, height_ratios=(2.2, 1))
    half = max(1, k // 2)
    ax_image, ax_overlay = fig.add_subplot(grid[0, :half]), fig.add_subplot(grid[0, half:])
    ax_image.imshow(to_display(image), interpolation="nearest")
    ax_image.set_title("generated image", fontsize=10)
    ax_overlay.imshow(to_display(image), interpolation="nearest")
    height, width = image.shape[-2:]  # the maps may be coarser than the image: stretch them
    ax_overlay.imshow(chosen, cmap="inferno", alpha=0.65, interpolation="bilinear",
                      extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    ax_overlay.set_title(f'"{labels[token_index]}" at step {step_index + 1} of {len(timesteps)} '
                         f"(t = {timesteps[step_index]})", fontsize=10)
    for ax in (ax_image, ax_overlay):
        ax.axis("off")
    share = step_maps.mean((-2, -1))  # each pixel's distribution over tokens, averaged
    top = float(step_maps.max())
    for i in range(k):
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(step_maps[i], cmap="inferno", vmin=0, vmax=top, interpolation="bilinear")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{labels[i]}\n{share[i]:.0%}", fontsize=7,
                     fontweight="bold" if i == token_index else "normal")
        for spine in ax.spines.values():
            spine.set_visible(i == token_index)
            spine.set_color("tab:cyan")
            spine.set_linewidth(3)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def attention_widget(pipe, prompt: str = "a red circle on the left", steps: int = 20,
                     seed: int = 0, guidance_scale: float = 1.0, token: str = "circle",
                     record=None) -> widgets.VBox:
    """Token picker, step slider and layer choice over the cross-attention of ``pipe``.

    Samples ``prompt`` once (``course.tinysd.attention_maps.record_attention``), or takes a
    ``record`` made already; the controls only re-render ``attention_maps_figure``.
    """
    from ..tinysd.attention_maps import record_attention

    if record is None:
        record = record_attention(pipe, prompt, steps=steps, seed=seed,
                                  guidance_scale=guidance_scale)
    labels, _ = record.token_maps(0)
    layer_options = [("all layers (mean)", "")] + [
        (f"{name.split('.transformer_blocks')[0]} ({maps.shape[-1]}x{maps.shape[-1]})", name)
        for name, maps in record.layer_maps.items()]
    cache: dict[str, torch.Tensor] = {}  # layer -> that layer's maps for the prompt

    def maps_of(layer: str) -> torch.Tensor:
        if layer not in cache:
            cache[layer] = record.token_maps(0, layer or None)[1]
        return cache[layer]

    token_choice = widgets.Dropdown(
        options=[(label, i) for i, label in enumerate(labels)],
        value=labels.index(token) if token in labels else min(2, len(labels) - 1),
        description="token", layout=widgets.Layout(width="240px"))
    step_slider = widgets.IntSlider(value=len(record.timesteps) // 2, min=0,
                                    max=len(record.timesteps) - 1, description="step",
                                    continuous_update=False, layout=widgets.Layout(width="320px"))
    layer_choice = widgets.Dropdown(options=layer_options, value="", description="layer",
                                    layout=widgets.Layout(width="380px"))
    return picture_widget(
        "course-attention", [token_choice, step_slider, layer_choice],
        lambda: attention_maps_figure(record.images[0], maps_of(layer_choice.value), labels,
                                      token_choice.value, step_slider.value, record.timesteps,
                                      title=f'"{record.prompts[0]}"'))
