"""What an adapter learnt, and what it broke, measured by image analysis.

Every number is prompt adherence (``course.metrics.prompt_adherence``): colour, shape and position
read off each generated image, plus the style (filled or outline) where it matters. The prompts
cover all 15 shape x position combinations (or all 60 base-world ones) over several seeds, and a
run with an adapter starts from the same noises as the run without, so differences are the
adapter's doing:

- ``purple``: purple shapes on the 8 combinations the adapter never saw in purple;
- ``outline``: ordinary prompts drawn as outlines, colour, shape and position kept;
- ``both``: both adapters at strength 1 on "a purple ...": purple outlines;
- ``base``: the 60 base-world prompts with an adapter active, against the same without one
  (forgetting: the points of adherence lost);
- ``strength 0``: whether an adapter at strength 0 gives exactly the base images.

``memorisation`` measures how close samples come to the training images (nearest-neighbour
distance in pixels), against how close two independent renders of the same caption come.
"""

from __future__ import annotations

import torch

from ..data.shapes import Combo, all_combinations, caption, render_combinations
from ..metrics import prompt_adherence
from ..training.adapters import purple_combinations
from .evaluate import generate

#: sampling for every measurement: DDIM (the pipeline's own), guidance 1 (the base model draws
#: its own prompts right without guidance)
STEPS, GUIDANCE = 20, 1.0


def prompts_of(combos: list[Combo], seeds: int) -> list[str]:
    """Each combination's caption, ``seeds`` times in a row (prompt i gets start noise i)."""
    return [caption(c) for c in combos for _ in range(seeds)]


def adherence(pipe, prompts: list[str], style: str | None = None, seed: int = 0,
              steps: int = STEPS, guidance: float = GUIDANCE) -> dict:
    """Prompt adherence of ``pipe``'s images of ``prompts`` (as the pipeline's adapters are
    set now), and the images."""
    images = generate(pipe, prompts, guidance, steps, seed)
    return prompt_adherence(images, prompts, style=style) | {"images": images}


def _strip(result: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()
            if k != "images"}


def purple_prompts(split: str = "unseen", seeds: int = 4) -> list[str]:
    return prompts_of(purple_combinations(split), seeds)


def base_prompts(seeds: int = 2) -> list[str]:
    return prompts_of(all_combinations(), seeds)


@torch.no_grad()
def measure_adapter(pipe, name: str, seeds: int = 4, base_seeds: int = 2,
                    base_reference: dict | None = None) -> dict:
    """The goals of one adapter loaded in ``pipe`` as ``name``.

    Returns {"new": adherence on what the adapter adds, "base": adherence on the 60 base
    prompts with it active, "base_without": the same without any adapter, "forgetting":
    points lost, "strength_0_exact": bool}.
    """
    from ..lora import set_adapter_strengths

    base_list = base_prompts(base_seeds)
    pipe.disable_lora()
    reference = base_reference or adherence(pipe, base_list, style="filled")
    pipe.enable_lora()
    set_adapter_strengths(pipe, {name: 0.0})
    at_zero = generate(pipe, base_list, GUIDANCE, STEPS, 0)
    set_adapter_strengths(pipe, {name: 1.0})
    if name == "purple":
        new = adherence(pipe, purple_prompts("unseen", seeds), style="filled")
        base = adherence(pipe, base_list, style="filled")
    else:
        new = adherence(pipe, base_list, style="outline")
        base = adherence(pipe, base_list)  # colour, shape, position kept, any style
    return {"new": _strip(new), "base": _strip(base), "base_without": _strip(reference),
            "forgetting": round(reference["all"] - base["all"], 4),
            "strength_0_exact": bool(torch.equal(at_zero, reference["images"]))}


#: strengths (purple, outline) the mix is also measured at: adapters trained apart interfere
MIXES = ((1.0, 1.0), (1.0, 0.5), (1.0, 1.5), (1.25, 1.0), (1.25, 1.25))


@torch.no_grad()
def measure_both(pipe, seeds: int = 2, strengths: tuple[float, float] = (1.0, 1.0)) -> dict:
    """Both adapters (at these strengths: purple, outline) on purple prompts of all 15
    combinations: purple outlines."""
    from ..lora import set_adapter_strengths

    set_adapter_strengths(pipe, {"purple": strengths[0], "outline": strengths[1]})
    prompts = prompts_of(purple_combinations("train") + purple_combinations("unseen"), seeds)
    return _strip(adherence(pipe, prompts, style="outline"))


@torch.no_grad()
def memorisation(pipe, training_images: torch.Tensor, prompts: list[str],
                 seed: int = 0) -> dict:
    """Mean distance (RMS over pixels, [-1, 1] units) from each sample of ``prompts`` to its
    nearest training image, and from fresh renders of the same captions to theirs: a model
    that copies its training images comes closer than a fresh render does."""
    from ..data.shapes import parse_caption

    samples = generate(pipe, prompts, GUIDANCE, STEPS, seed)
    fresh = render_combinations([Combo(**parse_caption(p)) for p in prompts], seed=seed + 999)

    def nearest(images):
        distance = torch.cdist(images.flatten(1), training_images.flatten(1))
        return (distance.min(1).values / images[0].numel() ** 0.5).mean().item()

    return {"samples": round(nearest(samples), 4), "fresh_renders": round(nearest(fresh), 4)}
