"""Image to image with a strength slider: how much of the input survives a new prompt.

``img2img_figure`` draws the input and the redrawn image; ``img2img_widget`` wires a strength
slider and a prompt choice to it (CSS class "course-img2img").
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .plots import to_display


def img2img_figure(image: torch.Tensor, redrawn: torch.Tensor, prompt: str,
                   strength: float) -> Figure:
    """The input and the redrawn image, both [1, 3, H, W] in [0, 1], side by side."""
    figure, axes = plt.subplots(1, 2, figsize=(4.4, 2.4))
    for axis, picture, title in ((axes[0], image, "input"),
                                 (axes[1], redrawn, f"strength {strength:.1f}")):
        axis.imshow(to_display(picture[0] * 2 - 1))
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.suptitle(prompt, fontsize=9)
    figure.tight_layout()
    return figure


def img2img_widget(pipe, redraw, image: torch.Tensor, prompts: list[str], strength: float = 0.6,
                   guidance_scale: float = 5.0, steps: int = 20, seed: int = 0):
    """A strength slider and a prompt choice over ``redraw(pipe, image, prompt, strength,
    guidance_scale=..., steps=..., seed=...)`` (your ``img2img``, or the course's)."""
    import ipywidgets as widgets

    from .widgets import picture_widget

    strength_slider = widgets.FloatSlider(value=strength, min=0.1, max=1.0, step=0.1,
                                          description="strength", continuous_update=False)
    prompt_choice = widgets.Dropdown(options=list(prompts), value=prompts[0],
                                     description="prompt", layout=widgets.Layout(width="380px"))

    def draw():
        redrawn = redraw(pipe, image, prompt_choice.value, strength_slider.value,
                         guidance_scale=guidance_scale, steps=steps, seed=seed)
        return img2img_figure(image, redrawn.cpu(), prompt_choice.value, strength_slider.value)

    return picture_widget("course-img2img", [prompt_choice, strength_slider], draw)


@torch.no_grad()
def strength_study(pipe, redraw, n_pairs: int = 24, strengths=(0.2, 0.4, 0.6, 0.8, 1.0),
                   guidance_scale: float = 5.0, steps: int = 20, seed: int = 0,
                   with_mean: bool = False) -> list[dict]:
    """What survives of the input, strength by strength. ``n_pairs`` rendered shapes, each
    redrawn by ``redraw`` (your ``img2img``) for a caption of another combination.

    Returns one row a strength: {"strength", "new" (adherence to the new prompt), "kept"
    (adherence to the input's own caption), "psnr" (dB, redrawn against input, mean)}, and
    with ``with_mean`` "new_with_mean": the new prompt's adherence when z0 is the posterior's
    mean instead of a sample (the course's ``img2img(..., posterior="mean")``).
    """
    from ..data.shapes import all_combinations, caption, render_combinations
    from ..metrics import prompt_adherence
    from ..tinysd.img2img import img2img as course_img2img
    from .latents import psnr

    combos = all_combinations()
    order = torch.randperm(len(combos), generator=torch.Generator().manual_seed(seed)).tolist()
    pairs = [(combos[a], combos[b]) for a, b in zip(order[:n_pairs], order[n_pairs:2 * n_pairs])]
    inputs = render_combinations([source for source, _ in pairs], seed=seed) / 2 + 0.5
    new_prompts = [caption(target) for _, target in pairs]
    old_prompts = [caption(source) for source, _ in pairs]

    def redraw_all(function, strength, **extra):
        return torch.cat([function(pipe, inputs[i:i + 1], new_prompts[i], strength,
                                   guidance_scale=guidance_scale, steps=steps, seed=seed + i,
                                   **extra).cpu() for i in range(n_pairs)])

    rows = []
    for strength in strengths:
        redrawn = redraw_all(redraw, strength)
        rows.append({
            "strength": strength,
            "new": prompt_adherence(redrawn * 2 - 1, new_prompts)["all"],
            "kept": prompt_adherence(redrawn * 2 - 1, old_prompts)["all"],
            "psnr": sum(psnr(redrawn[i] * 2 - 1, inputs[i] * 2 - 1)
                        for i in range(n_pairs)) / n_pairs,
        })
        if with_mean:
            with_mean_images = redraw_all(course_img2img, strength, posterior="mean")
            rows[-1]["new_with_mean"] = prompt_adherence(with_mean_images * 2 - 1,
                                                         new_prompts)["all"]
    return rows
