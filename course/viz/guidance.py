"""Pictures of classifier-free guidance (lesson 05): pure render functions and one widget.

The render functions take images and numbers and return a matplotlib Figure; the widget
(``guidance_widget``) only samples with ``course.tinysd.guided.guided_sample`` and hands the
image to ``guidance_figure``.
"""

from __future__ import annotations

import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from ..metrics import analyze_image
from .plots import to_display
from .widgets import picture_widget

#: Guidance scales of the module's exercise 4, and the range the lesson measures.
EXERCISE_SCALES = (1.0, 3.0, 7.0, 12.0, 20.0)


def clipped_share(images: torch.Tensor) -> float:
    """Share of values of images [B, 3, H, W] outside [-1, 1], before any clamping."""
    return float((images.detach().float().abs() > 1).float().mean())


def mean_saturation(images: torch.Tensor) -> float:
    """Mean HSV saturation (max - min) / max over all pixels of images [B, 3, H, W] in [-1, 1]
    (clamped first, as shown): 0 for greys, 1 for pure colours."""
    rgb = (images.detach().float().clamp(-1, 1) + 1) / 2  # [B, 3, H, W] in [0, 1]
    high, low = rgb.amax(dim=1), rgb.amin(dim=1)
    return float(((high - low) / high.clamp_min(1e-6)).mean())


def _reading(image: torch.Tensor) -> str:
    found = analyze_image(image.detach().float().cpu())
    words = [found[key] or "?" for key in ("color", "shape", "position")]
    return " ".join(words)


def guidance_figure(image: torch.Tensor, prompt: str, guidance_scale: float,
                    negative_prompt: str = "", steps: int | None = None,
                    seconds: float | None = None, size: float = 3.0,
                    judge: bool = True) -> Figure:
    """One generated image [3, H, W] (unclamped, in about [-1, 1]) with what was asked, what
    the image analysis of the shapes world reads in it (``judge``), and how much is clipped."""
    fig, ax = plt.subplots(figsize=(size, size + 0.6))
    ax.imshow(to_display(image), interpolation="nearest")
    ax.axis("off")
    asked = f'"{prompt}"' + (f'  minus "{negative_prompt}"' if negative_prompt else "")
    settings = f"w = {guidance_scale:g}" + (f", {steps} steps" if steps else "")
    if seconds is not None:
        settings += f", {1000 * seconds:.0f} ms"
    clipped = clipped_share(image.unsqueeze(0))
    reading = f"reads: {_reading(image)}; " if judge else ""
    ax.set_title(f"{asked}\n{settings}\n{reading}clipped {clipped:.1%}", fontsize=8)
    fig.tight_layout()
    return fig


def scale_grid(images: torch.Tensor, prompts: list[str], scales) -> Figure:
    """Images [P * S, 3, H, W], prompt by prompt (rows), each at the S guidance ``scales``
    (columns), as the module's exercise 4 asks: one start noise per row."""
    scales = list(scales)
    fig, axes = plt.subplots(len(prompts), len(scales), squeeze=False,
                             figsize=(1.3 * len(scales) + 1.8, 1.3 * len(prompts) + 0.4))
    for row, prompt in enumerate(prompts):
        for col, w in enumerate(scales):
            ax = axes[row, col]
            ax.imshow(to_display(images[row * len(scales) + col]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"w = {w:g}", fontsize=9)
            if col == 0:
                ax.set_ylabel(prompt.removeprefix("a ").replace(" ", "\n", 1), fontsize=7)
    fig.tight_layout()
    return fig


def tradeoff_figure(rows: list[dict], title: str = "") -> Figure:
    """Adherence and over-saturation against the guidance scale.

    rows: one dict per scale with "w", the adherence fractions "color", "shape", "position",
    "all", and "saturation", "clipped" (see ``mean_saturation``, ``clipped_share``).
    """
    ws = [r["w"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for key, style in (("all", "k-o"), ("color", "--"), ("shape", "--"), ("position", "--")):
        left.plot(ws, [100 * r[key] for r in rows], style, label=key, markersize=4)
    left.set(xlabel="guidance scale w", ylabel="prompt adherence (%)", ylim=(-3, 103),
             title="adherence")
    left.legend(fontsize=8)
    right.plot(ws, [r["saturation"] for r in rows], "o-", color="tab:purple", markersize=4)
    right.set(xlabel="guidance scale w", ylabel="mean saturation", title="over-saturation")
    twin = right.twinx()
    twin.plot(ws, [100 * r["clipped"] for r in rows], "s--", color="tab:red", markersize=4)
    twin.set_ylabel("values beyond [-1, 1] (%)", color="tab:red")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def adherence_curves(curves: dict[str, list[dict]], title: str = "") -> Figure:
    """Prompt adherence ("all" attributes) against the guidance scale, one line per model.

    curves: model name -> rows with "w" and "all" (as ``tradeoff_figure``'s), every w > 0. A star
    marks each line's best scale (named in the legend); a dotted line marks w = 1, the
    conditional model without guidance. The scale axis is logarithmic, so that 1.5 and 20 both
    have room.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    scales = sorted({r["w"] for rows in curves.values() for r in rows})
    if scales[0] <= 0:
        raise ValueError(f"the scale axis is logarithmic: every w must be > 0, got {scales[0]}")
    for i, (name, rows) in enumerate(curves.items()):
        colour = f"C{i}"  # matplotlib's colour cycle: as many lines as there are models
        ws, alls = [r["w"] for r in rows], [100 * r["all"] for r in rows]
        best = max(range(len(rows)), key=lambda i: alls[i])
        ax.plot(ws, alls, "o-", color=colour, markersize=4,
                label=f"{name}: best {alls[best]:.0f}% at w = {ws[best]:g}")
        ax.plot(ws[best], alls[best], "*", color=colour, markersize=13)
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xticks(scales, [f"{w:g}" for w in scales])
    ax.minorticks_off()
    ax.set(xlabel="guidance scale w", ylabel="prompt adherence, all attributes (%)",
           ylim=(-3, 103), title=title or "adherence against guidance scale")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def guidance_widget(pipe, prompts=None, prompt: str | None = None, guidance_scale: float = 7.5,
                    steps: int = 10, seed: int = 0, negative_prompt: str = "") -> widgets.VBox:
    """Prompt, negative prompt, guidance scale, steps and seed -> one image of ``pipe``.

    ``prompts``: the choices of the prompt menu (default: every caption of the shapes world, the
    six held-out ones included); any text works for a hub pipeline.
    """
    from ..data.shapes import all_combinations, caption
    from ..tinysd.guided import guided_sample

    shapes_world = pipe.unet.config.sample_size <= 32  # the image analysis knows only it
    prompts = list(prompts or [caption(c) for c in all_combinations()])
    prompt = prompt or prompts[0]
    if prompt not in prompts:
        prompts.insert(0, prompt)
    prompt_menu = widgets.Dropdown(options=prompts, value=prompt, description="prompt")
    negative = widgets.Text(value=negative_prompt, description="negative",
                            continuous_update=False, placeholder='"" (none)')
    scale = widgets.FloatSlider(value=guidance_scale, min=0.0, max=30.0, step=0.5,
                                description="guidance w", continuous_update=False)
    step_count = widgets.IntSlider(value=steps, min=2, max=50, description="steps",
                                   continuous_update=False)
    seed_box = widgets.IntSlider(value=seed, min=0, max=99, description="seed",
                                 continuous_update=False)

    def draw() -> Figure:
        start = time.perf_counter()
        image = guided_sample(pipe, [prompt_menu.value], scale.value, step_count.value,
                              seed=seed_box.value, negative_prompt=negative.value)[0]
        return guidance_figure(image, prompt_menu.value, scale.value, negative.value,
                               step_count.value, time.perf_counter() - start,
                               judge=shapes_world)

    controls = [prompt_menu, negative, scale, step_count, seed_box]
    return picture_widget("course-guidance", controls, draw)
