"""Pictures of LoRA adapters (lesson 07): pure render functions and the strength widget.

``adapter_figure`` draws images and says what the image analysis reads in them; the widget
(``adapter_widget``) only sets the adapters' strengths on the pipeline, samples, and hands the
images to it.
"""

from __future__ import annotations

import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from ..metrics import analyze_images
from .plots import to_display
from .widgets import picture_widget


def reading(found: dict) -> str:
    """What the analysis read in one image: "purple outline triangle at top" (? if unsure)."""
    style = "outline " if found.get("style") == "outline" else ""
    words = [found.get(key) or "?" for key in ("color", "shape")]
    return f"{words[0]} {style}{words[1]}, {found.get('position') or '?'}"


def adapter_figure(images: torch.Tensor, prompt: str, strengths: dict[str, float],
                   seconds: float | None = None, size: float = 1.9) -> Figure:
    """Images [n, 3, H, W] of one ``prompt`` (one per seed), titled with the adapters'
    strengths and, under each image, what the analysis reads in it."""
    found = analyze_images(images.detach().float().cpu())
    figure, axes = plt.subplots(1, len(images), figsize=(size * len(images), size + 0.9),
                                squeeze=False)
    for axis, image, verdict in zip(axes[0], images, found):
        axis.imshow(to_display(image), interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel(reading(verdict), fontsize=7)
    setting = ", ".join(f"{name} {value:g}" for name, value in strengths.items()) or "base"
    timing = f", {1000 * seconds:.0f} ms" if seconds is not None else ""
    figure.suptitle(f'"{prompt}"\n{setting}{timing}', fontsize=9)
    figure.tight_layout()
    return figure


def strength_grid(images: torch.Tensor, rows: list[str], columns: list[str],
                  title: str = "") -> Figure:
    """Images [R * C, 3, H, W], row by row, with row and column labels."""
    n_rows, n_cols = len(rows), len(columns)
    figure, axes = plt.subplots(n_rows, n_cols, squeeze=False,
                                figsize=(1.25 * n_cols + 1.6, 1.25 * n_rows + 0.5))
    for r in range(n_rows):
        for c in range(n_cols):
            axis = axes[r, c]
            axis.imshow(to_display(images[r * n_cols + c]), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(columns[c], fontsize=8)
            if c == 0:
                axis.set_ylabel(rows[r], fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def adapter_widget(pipe, adapters: list[str], prompt: str = "a purple triangle at the top",
                   seeds: int = 3, steps: int = 15, strengths: dict[str, float] | None = None,
                   prompts: list[str] | None = None) -> widgets.VBox:
    """A strength slider per loaded adapter and a prompt box over ``seeds`` images of ``pipe``.

    Strength 0 switches an adapter off; 1 is as trained; in between and beyond scale its
    update (diffusers' ``set_adapters(..., adapter_weights=...)``).
    """
    from ..lora import set_adapter_strengths
    from ..tinysd.evaluate import generate

    strengths = strengths or {name: 1.0 for name in adapters}
    sliders = {name: widgets.FloatSlider(value=strengths.get(name, 0.0), min=0.0, max=1.5,
                                         step=0.1, description=name, continuous_update=False,
                                         readout_format=".1f")
               for name in adapters}
    options = list(prompts or [])
    if prompt not in options:
        options.insert(0, prompt)
    prompt_box = widgets.Combobox(value=prompt, options=options, description="prompt",
                                  ensure_option=False, continuous_update=False)

    def draw() -> Figure:
        chosen = {name: slider.value for name, slider in sliders.items()}
        start = time.perf_counter()
        set_adapter_strengths(pipe, chosen)
        images = generate(pipe, [prompt_box.value] * seeds, 1.0, steps, seed=0)
        return adapter_figure(images, prompt_box.value, chosen, time.perf_counter() - start)

    return picture_widget("course-lora", [prompt_box, *sliders.values()], draw)
