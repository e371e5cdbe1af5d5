"""The captioned-shapes world: one coloured shape at a named place, and a caption that says so.

Every image is 32x32 (by default) with a circle, square or triangle in red, green, blue or yellow,
on the left, on the right, at the top, at the bottom or in the center of a plain dark background:
"a red circle on the left". 4 x 3 x 5 = 60 combinations; six of them (``HELDOUT``) never appear
in the training split, so a model can be asked for a combination it has never seen. Size, exact
placement and colour are jittered, so a model has to learn the concepts, not 60 pictures.

Geometry is in pixel units at 32x32 and scales with ``size``. Coordinates are continuous: x to the
right, y down, pixel (row i, column j) covers [j, j + 1] x [i, i + 1]. A shape's centre is its
centre of mass (for the triangle, a third of its height above the base).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import NamedTuple

import torch

COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("left", "right", "top", "bottom", "center")

#: colour name -> RGB 0-255. Saturated hues far apart in RGB, so they stay distinguishable after a
#: VAE's blur or a sampler's leftover noise (red and yellow, the closest pair, differ by 160 in G).
PALETTE = {
    "red": (215, 45, 45),
    "green": (40, 175, 70),
    "blue": (45, 90, 225),
    "yellow": (235, 205, 45),
}
#: Colours outside the base world, for fine-tuning (lesson 07 teaches the model "purple" with a
#: LoRA adapter). Captions may name them; ``shapes_dataset`` never draws them.
NEW_COLORS = {"purple": (150, 60, 210)}
#: every colour a caption may name, the base world's first
ALL_COLORS = COLORS + tuple(NEW_COLORS)
#: A dark neutral grey: every palette colour has a channel near full brightness, so each stands far
#: from it (yellow would wash out on white, and a mid grey sits close to all of them in brightness).
BACKGROUND = (30, 30, 30)

#: position -> its words in a caption
WHERE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
#: position -> anchor (x, y) in pixels at size 32; a shape's centre lands within JITTER of it
ANCHORS = {
    "left": (9.0, 16.0),
    "right": (23.0, 16.0),
    "top": (16.0, 9.0),
    "bottom": (16.0, 23.0),
    "center": (16.0, 16.0),
}

#: width of a shape in pixels at size 32 (circle diameter, square side, triangle base). The ranges
#: differ so the shapes look about equally big: a triangle fills half its box, a square all of it.
EXTENT_RANGE = {"circle": (10.0, 14.0), "square": (9.5, 13.0), "triangle": (11.5, 15.5)}
JITTER = 1.5  # the centre moves up to this many pixels (at size 32) along x and along y
COLOR_JITTER = 0.08  # each channel moves up to this much, in [-1, 1] units (about 10/255)
TRIANGLE_HEIGHT = math.sqrt(3) / 2  # equilateral: height = TRIANGLE_HEIGHT * base
#: styles a shape can be drawn in: filled (the base world), or an outline of OUTLINE_WIDTH pixels
#: (at size 32) with the background inside (lesson 07's style adapter)
STYLES = ("filled", "outline")
OUTLINE_WIDTH = 2.0
#: area of a shape of extent s is AREA_FACTOR[shape] * s**2
AREA_FACTOR = {"circle": math.pi / 4, "square": 1.0, "triangle": TRIANGLE_HEIGHT / 2}
SUPERSAMPLE = 4  # anti-aliasing: a pixel's value is the mean of SUPERSAMPLE x SUPERSAMPLE samples


class Combo(NamedTuple):
    """One combination of attributes, e.g. Combo("red", "circle", "left")."""

    color: str
    shape: str
    position: str


#: never produced by split="train". Every colour, shape and position (and every colour-shape pair)
#: still appears in training, so a model can only get these right by composing what it learnt.
HELDOUT = (
    Combo("blue", "triangle", "center"),
    Combo("red", "square", "right"),
    Combo("green", "circle", "top"),
    Combo("yellow", "triangle", "bottom"),
    Combo("yellow", "circle", "left"),
    Combo("green", "square", "center"),
)


def all_combinations() -> list[Combo]:
    """The 60 combinations, colour-major: (red, circle, left), (red, circle, right), ..."""
    return [Combo(c, s, p) for c in COLORS for s in SHAPES for p in POSITIONS]


def _grammar() -> str:
    return (
        'captions read "a <color> <shape> <where>" with color one of '
        f"{', '.join(ALL_COLORS)}; shape one of {', '.join(SHAPES)}; "
        f"where one of {', '.join(repr(w) for w in WHERE.values())}"
    )


def caption(attrs: Mapping[str, str] | Combo) -> str:
    """The caption of a combination: {"color": "red", "shape": "circle", "position": "left"}
    (or a Combo) -> "a red circle on the left"."""
    if isinstance(attrs, Combo):
        attrs = attrs._asdict()
    color, shape, position = attrs["color"], attrs["shape"], attrs["position"]
    if color not in ALL_COLORS or shape not in SHAPES or position not in POSITIONS:
        raise ValueError(f"not a combination of the shapes world: {dict(attrs)}; {_grammar()}")
    return f"a {color} {shape} {WHERE[position]}"


_CAPTION = re.compile(
    rf"a ({'|'.join(ALL_COLORS)}) ({'|'.join(SHAPES)}) ({'|'.join(WHERE.values())})")
_POSITION_OF = {words: position for position, words in WHERE.items()}


def parse_caption(text: str) -> dict[str, str]:
    """The attributes of a caption: "a red circle on the left" ->
    {"color": "red", "shape": "circle", "position": "left"}. Case and spacing are ignored.

    Raises:
        ValueError: for text outside the grammar; the message states the grammar.
    """
    match = _CAPTION.fullmatch(" ".join(str(text).lower().split()))
    if match is None:
        raise ValueError(f"not a caption of the shapes world: {text!r}; {_grammar()}")
    color, shape, where = match.groups()
    return {"color": color, "shape": shape, "position": _POSITION_OF[where]}


def _to_model_range(rgb) -> torch.Tensor:
    """RGB 0-255 (a triple, or [..., 3]) -> float32 in [-1, 1]."""
    return torch.as_tensor(rgb, dtype=torch.float32) / 127.5 - 1.0


def _inside_circle(dx, dy, half):
    return dx**2 + dy**2 <= half**2


def _inside_square(dx, dy, half):
    return (dx.abs() <= half) & (dy.abs() <= half)


def _inside_triangle(dx, dy, half):
    # pointing up; the apex sits 2/3 of the height above the centre of mass, the base 1/3 below
    height = 2 * half * TRIANGLE_HEIGHT
    below_apex = dy + 2 * height / 3
    return (below_apex <= height) & (dx.abs() <= below_apex / height * half)


_INSIDE = {"circle": _inside_circle, "square": _inside_square, "triangle": _inside_triangle}


def shape_coverage(
    shapes: torch.Tensor, centers: torch.Tensor, extents: torch.Tensor, size: int = 32
) -> torch.Tensor:
    """How much of each pixel the shape covers, by supersampling.

    Args:
        shapes: LongTensor [n], indices into SHAPES.
        centers: [n, 2], centres of mass (x, y) in pixels.
        extents: [n], widths in pixels (circle diameter, square side, triangle base).
        size: image side in pixels.

    Returns:
        float32 [n, size, size] in [0, 1].
    """
    n, fine = len(shapes), size * SUPERSAMPLE
    samples = (torch.arange(fine, dtype=torch.float32) + 0.5) / SUPERSAMPLE  # sample coordinates
    coverage = torch.empty(n, size, size)
    for index, name in enumerate(SHAPES):
        for chunk in (shapes == index).nonzero().flatten().split(256):  # bounds memory
            dx = samples.view(1, 1, fine) - centers[chunk, 0].view(-1, 1, 1)
            dy = samples.view(1, fine, 1) - centers[chunk, 1].view(-1, 1, 1)
            inside = _INSIDE[name](dx, dy, extents[chunk].view(-1, 1, 1) / 2)
            pooled = inside.float().view(-1, size, SUPERSAMPLE, size, SUPERSAMPLE).mean((2, 4))
            coverage[chunk] = pooled
    return coverage


def outline_inset(shapes: torch.Tensor, width: torch.Tensor | float) -> torch.Tensor:
    """How much smaller the inner edge of an outline ``width`` pixels wide is than its outer edge,
    in extent units: 2 * width for a circle or a square, 2 * sqrt(3) * width for an equilateral
    triangle (its sides move in by ``width``; its centre of mass is its incentre, so it stays)."""
    factor = torch.where(shapes == SHAPES.index("triangle"), 2 * math.sqrt(3), 2.0)
    return factor * torch.as_tensor(width, dtype=torch.float32)


def draw_shapes(
    shapes: torch.Tensor,
    centers: torch.Tensor,
    extents: torch.Tensor,
    colors: torch.Tensor,
    size: int = 32,
    outline: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paint anti-aliased shapes on the background; any geometry and any colour.

    Args:
        shapes, centers, extents, size: as in ``shape_coverage``.
        colors: [n, 3] in [-1, 1].
        outline: [n] outline widths in pixels (at this size), 0 for a filled shape; None: all
            filled. An outline is the shape minus the same shape inset by the width.

    Returns:
        float32 [n, 3, size, size] in [-1, 1].
    """
    coverage = shape_coverage(shapes, centers, extents, size)  # [n, size, size]
    if outline is not None and bool((outline > 0).any()):
        outlined = (outline > 0).nonzero().flatten()
        inner = (extents[outlined] - outline_inset(shapes[outlined], outline[outlined]))
        hole = shape_coverage(shapes[outlined], centers[outlined], inner.clamp_min(0), size)
        coverage[outlined] = (coverage[outlined] - hole).clamp_min(0)
    coverage = coverage.unsqueeze(1)  # [n, 1, size, size]
    background = _to_model_range(BACKGROUND).view(1, 3, 1, 1)
    return background + coverage * (colors.view(-1, 3, 1, 1) - background)


def _rgb(color: str) -> tuple[int, int, int]:
    return PALETTE[color] if color in PALETTE else NEW_COLORS[color]


def _render(combos: list[Combo], size: int, generator: torch.Generator, jitter: bool,
            style: str = "filled", colors: torch.Tensor | None = None):
    """Images [n, 3, size, size] of the given combinations, jittered with ``generator``.

    colors: [n, 3] in [-1, 1] to paint instead of the combinations' palette colours.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    n, scale = len(combos), size / 32
    shapes = torch.tensor([SHAPES.index(c.shape) for c in combos], dtype=torch.long)
    anchors = torch.tensor([ANCHORS[c.position] for c in combos]).view(n, 2) * scale
    if colors is None:
        colors = _to_model_range([_rgb(c.color) for c in combos]).view(n, 3)
    low, high = torch.tensor([EXTENT_RANGE[c.shape] for c in combos]).view(n, 2).unbind(1)
    if jitter:
        extents = (low + (high - low) * torch.rand(n, generator=generator)) * scale
        centers = anchors + JITTER * scale * (2 * torch.rand(n, 2, generator=generator) - 1)
        colors = colors + COLOR_JITTER * (2 * torch.rand(n, 3, generator=generator) - 1)
    else:
        extents, centers = (low + high) / 2 * scale, anchors
    # keep the whole shape inside the image, half a pixel from the border
    half_width = extents / 2
    above = torch.where(shapes == SHAPES.index("triangle"), 2 / 3 * TRIANGLE_HEIGHT, 0.5) * extents
    below = torch.where(shapes == SHAPES.index("triangle"), 1 / 3 * TRIANGLE_HEIGHT, 0.5) * extents
    margin = 0.5 * scale
    x = centers[:, 0].clamp(half_width + margin, size - half_width - margin)
    y = centers[:, 1].clamp(above + margin, size - below - margin)
    outline = torch.full((n,), OUTLINE_WIDTH * scale if style == "outline" else 0.0)
    return draw_shapes(shapes, torch.stack([x, y], 1), extents, colors.clamp(-1, 1), size,
                       outline)


def _split(split: str) -> list[Combo]:
    combos = all_combinations()
    if split == "all":
        return combos
    if split == "train":
        return [c for c in combos if c not in HELDOUT]
    if split == "heldout":
        return [c for c in combos if c in HELDOUT]
    raise ValueError(f'split must be "train", "heldout" or "all", got {split!r}')


def shapes_dataset(
    n: int, seed: int = 0, size: int = 32, split: str = "train"
) -> tuple[torch.Tensor, list[str]]:
    """``n`` captioned images of the world, the same for the same arguments.

    The combinations of the split come in shuffled rounds (each once per round), so any
    ``n >= len(split)`` shows every one of them and the classes stay balanced.

    Args:
        n: number of images.
        seed: seeds the order and the jitter.
        size: image side in pixels; the geometry scales with it.
        split: "train" (54 combinations, HELDOUT removed), "heldout" (the 6) or "all" (60).

    Returns:
        (images float32 [n, 3, size, size] in [-1, 1], captions: list of n str)
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    combos = _split(split)
    generator = torch.Generator().manual_seed(seed)
    rounds = [torch.randperm(len(combos), generator=generator) for _ in range(-(-n // len(combos)))]
    order = torch.cat(rounds)[:n].tolist() if rounds else []
    chosen = [combos[i] for i in order]
    return _render(chosen, size, generator, jitter=True), [caption(c) for c in chosen]


def render_shape(
    attrs: Mapping[str, str] | Combo,
    size: int = 32,
    seed: int = 0,
    generator: torch.Generator | None = None,
    jitter: bool = True,
    style: str = "filled",
) -> torch.Tensor:
    """One image of a combination, e.g. render_shape({"color": "red", "shape": "circle",
    "position": "left"}).

    Args:
        attrs: a dict with keys color, shape, position (or a Combo).
        size: image side in pixels.
        seed: seeds the jitter, unless ``generator`` is given.
        generator: draws the jitter (and advances), for a stream of different renders.
        jitter: False gives the canonical picture: middle size, on the anchor, palette colour.
        style: "filled", or "outline" (OUTLINE_WIDTH pixels wide at size 32).

    Returns:
        float32 [3, size, size] in [-1, 1].
    """
    combo = Combo(**parse_caption(caption(attrs)))  # validates the attributes
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    return _render([combo], size, generator, jitter, style)[0]


def render_combinations(combos: list[Combo], seed: int = 0, size: int = 32,
                        style: str = "filled") -> torch.Tensor:
    """Jittered images [n, 3, size, size] in [-1, 1] of exactly these combinations, in this
    order; any colour of ALL_COLORS (a new colour is jittered like the others)."""
    combos = [Combo(**parse_caption(caption(c))) for c in combos]  # validates them
    return _render(combos, size, torch.Generator().manual_seed(seed), True, style)


def autoencoder_dataset(n: int, seed: int = 0, size: int = 32,
                        outline_share: float = 0.25) -> torch.Tensor:
    """``n`` images [n, 3, size, size] of the world's geometry in *any* colour and style, for
    training an autoencoder that, like Stable Diffusion's, can draw more than the captions name.

    Half the shapes take a palette colour, half a random RGB colour at least 0.6 (in [-1, 1]
    units) from the background; ``outline_share`` of them are outlines 1.5 to 3 pixels wide
    (at size 32). The denoiser still learns only the captioned world; a fine-tune (lesson 07)
    can then teach a new colour or style that the decoder is able to draw.
    """
    generator = torch.Generator().manual_seed(seed)
    combos = all_combinations()
    chosen = [combos[i] for i in torch.randint(len(combos), (n,), generator=generator).tolist()]
    base = _to_model_range([PALETTE[c.color] for c in chosen]).view(n, 3)
    background = _to_model_range(BACKGROUND)
    random_rgb = torch.rand(n, 3, generator=generator) * 2 - 1
    for _ in range(8):  # redraw the colours too close to the background to see
        close = (random_rgb - background).norm(dim=1) < 0.6
        if not bool(close.any()):
            break
        random_rgb[close] = torch.rand(int(close.sum()), 3, generator=generator) * 2 - 1
    pick_random = torch.rand(n, generator=generator) < 0.5
    colors = torch.where(pick_random.view(n, 1), random_rgb, base)
    images = _render(chosen, size, generator, True, colors=colors)
    outlined = (torch.rand(n, generator=generator) < outline_share).nonzero().flatten()
    if len(outlined):
        widths = (1.5 + 1.5 * torch.rand(len(outlined), generator=generator)) * size / 32
        images[outlined] = _outline_like(images[outlined], [chosen[i] for i in outlined.tolist()],
                                         colors[outlined], widths, size, generator)
    return images


def _outline_like(images, combos, colors, widths, size, generator):
    """Outlined versions of freshly jittered ``combos`` (widths [k] in pixels at this size)."""
    k, scale = len(combos), size / 32
    shapes = torch.tensor([SHAPES.index(c.shape) for c in combos], dtype=torch.long)
    anchors = torch.tensor([ANCHORS[c.position] for c in combos]).view(k, 2) * scale
    low, high = torch.tensor([EXTENT_RANGE[c.shape] for c in combos]).view(k, 2).unbind(1)
    extents = (low + (high - low) * torch.rand(k, generator=generator)) * scale
    centers = anchors + JITTER * scale * (2 * torch.rand(k, 2, generator=generator) - 1)
    half = extents / 2
    centers[:, 0] = centers[:, 0].clamp(half + 0.5 * scale, size - half - 0.5 * scale)
    centers[:, 1] = centers[:, 1].clamp(half + 0.5 * scale, size - half - 0.5 * scale)
    return draw_shapes(shapes, centers, extents, colors.clamp(-1, 1), size, widths)
