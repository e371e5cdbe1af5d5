"""Judging images of the shapes world by image analysis, with no learned model in the loop.

For each image [3, H, W] in [-1, 1]:

1. foreground = pixels far from the background colour;
2. connected groups of foreground pixels (8 neighbours); the largest is "the shape";
3. colour = the palette colour nearest to the mean of the shape's inner pixels (a blur may dim it);
4. shape = which ideal circle, square or triangle (same area, same centre) overlaps it best;
5. position = the anchor nearest to its centre of mass;
6. style = "outline" when the shape encloses background (a hole of at least OUTLINE_HOLE_SHARE
   of the filled shape), else "filled". Steps 4-5 judge the shape with its holes filled in.

An image is *clean* when it shows exactly one shape of plausible size and of a known colour,
shape and position, on a background with (almost) no stray pixels. Thresholds are in [-1, 1]
units (RGB distances) and pixels at 32x32; areas scale with the image.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F

from .data.shapes import (
    ALL_COLORS,
    ANCHORS,
    AREA_FACTOR,
    BACKGROUND,
    COLORS,
    NEW_COLORS,
    PALETTE,
    POSITIONS,
    SHAPES,
    parse_caption,
    shape_coverage,
)

#: a pixel is foreground when its RGB distance to the background exceeds this: a third of the way
#: to the nearest palette colour (red, 1.46 away), so the anti-aliased rim counts half the time
FOREGROUND = 0.5
FAINT = 0.4  # a pixel this far from the background outside the shape is a stray pixel
MAX_STRAY = 4  # stray pixels a clean image may have
MIN_BLOB = 6  # smaller foreground groups are specks (stray pixels), not shapes
AREA_RANGE = (20.0, 400.0)  # plausible shape areas in pixels; the world draws about 55 to 170
COLOR_TOLERANCE = 0.35  # farthest a shape's colour may be from its palette colour (jitter: 0.14)
MIN_STRENGTH = 0.75  # a colour may be dimmed this far towards the background (blur) and still count
MIN_SHAPE_SCORE = 0.75  # least overlap (intersection over union) with the best ideal shape
#: the ideal shapes are also compared blurred by these sigmas (pixels), as a VAE blurs an image:
#: without it, a blurred square's round corners pass for a circle
TEMPLATE_BLURS = (0.0, 0.75, 1.5)
POSITION_TOLERANCE = 4.0  # farthest a centre may be from its anchor, in pixels (jitter: 2.1)
#: a shape is an outline when the background it encloses is at least this share of the shape
#: with its holes filled: a 2-pixel outline leaves 8% (the smallest triangle) to 40% (a circle)
#: when sharp, less after an autoencoder's blur; a filled shape, 0
OUTLINE_HOLE_SHARE = 0.06
MIN_HOLE = 3  # pixels (at 32x32): a smaller enclosed speck is noise, not an outline

#: the reasons an image is not clean, in the order they are checked
PROBLEMS = (
    "no_shape",
    "several_shapes",
    "wrong_size",
    "unknown_color",
    "unknown_shape",
    "unknown_position",
    "stray_pixels",
)

_BACKGROUND = torch.tensor(BACKGROUND, dtype=torch.float32) / 127.5 - 1  # [3]
#: every colour a caption may name: the base world's four, then the new ones (purple)
_PALETTE = torch.tensor([{**PALETTE, **NEW_COLORS}[c] for c in ALL_COLORS],
                        dtype=torch.float32) / 127.5 - 1  # [5, 3]


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """Grow a bool mask [B, H, W] by one pixel (8 neighbours)."""
    return F.max_pool2d(mask.float().unsqueeze(1), 3, 1, 1).squeeze(1) > 0


def _erode(mask: torch.Tensor) -> torch.Tensor:
    """Shrink a bool mask [B, H, W] by one pixel (8 neighbours)."""
    return ~_dilate(~mask)


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of [B, H, W] (zeros beyond the border); sigma 0 leaves it as it is.

    Separable, so it is two matrix products: blurred = G @ image @ G.T with G[i, j] the Gaussian
    weight of pixel j in pixel i.
    """
    if sigma == 0:
        return images
    offsets = torch.arange(images.shape[-1], dtype=torch.float32)
    weights = torch.exp(-((offsets.view(-1, 1) - offsets.view(1, -1)) ** 2) / (2 * sigma**2))
    weights = weights / weights.sum(1, keepdim=True).max()  # the same kernel everywhere
    return weights @ images @ weights.T


def label_components(mask: torch.Tensor) -> torch.Tensor:
    """Connected components of a bool mask [B, H, W] (8 neighbours), by label propagation.

    Every foreground pixel starts with its own label, its flat index + 1. Each round, a pixel
    takes the largest label among its neighbours, then jumps: the pixel a label names lies in the
    same component and already holds a label at least as large, so the pixel takes that one too.
    Rounds stop when nothing changes: every component then carries the label of its last pixel.
    The jumps bring the number of rounds from the component's length (~15) down to ~5.

    Returns:
        LongTensor [B, H, W]: 0 on the background, the component's label elsewhere.
    """
    batch, height, width = mask.shape
    labels = torch.arange(1, height * width + 1).view(1, height, width) * mask
    while True:
        grown = F.max_pool2d(labels.unsqueeze(1).float(), 3, 1, 1).squeeze(1).long() * mask
        flat = grown.flatten(1)
        grown = flat.gather(1, (flat - 1).clamp_min(0)).view(batch, height, width) * mask
        if torch.equal(grown, labels):
            return labels
        labels = grown


def analyze_images(images: torch.Tensor) -> list[dict]:
    """``analyze_image`` for a batch [B, 3, H, W] (square images), vectorised over the batch."""
    if isinstance(images, (list, tuple)):
        images = torch.stack(list(images))
    images = images.detach().float().cpu().clamp(-1, 1)
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected square RGB images [B, 3, H, W], got {list(images.shape)}")
    batch, _, size, _ = images.shape
    scale = size / 32
    away = images - _BACKGROUND.view(1, 3, 1, 1)  # [B, 3, H, W]
    distance = away.norm(dim=1)  # [B, H, W]

    # 1-2. foreground, its components, the largest one
    foreground = distance > FOREGROUND
    labels = label_components(foreground)
    slots = size * size + 1  # label values 0 .. size*size
    keys = labels + slots * torch.arange(batch).view(batch, 1, 1)
    counts = torch.bincount(keys.flatten(), minlength=batch * slots).view(batch, slots)
    counts[:, 0] = 0  # the background is not a component
    n_blobs = (counts >= MIN_BLOB * scale**2).sum(1)
    blob = foreground & (labels == counts.argmax(1).view(batch, 1, 1))  # [B, H, W]
    holes = enclosed(blob)  # background inside the blob: an outline's middle

    # 3. colour
    color, color_distance, color_index = _blob_colour(images, blob, distance)

    # coverage: how far each pixel near the blob goes from the background towards its colour
    direction = color - _BACKGROUND  # [B, 3]
    along = (away * direction.view(batch, 3, 1, 1)).sum(1)
    near_blob = _dilate(blob)
    coverage = (along / direction.pow(2).sum(1).clamp_min(1e-6).view(batch, 1, 1)).clamp(0, 1)
    coverage = torch.maximum(coverage * near_blob, holes.float())  # judged with holes filled
    area = coverage.sum((1, 2))
    pixel_centres = torch.arange(size, dtype=torch.float32) + 0.5
    x = (coverage.sum(1) * pixel_centres).sum(1) / area.clamp_min(1e-6)
    y = (coverage.sum(2) * pixel_centres).sum(1) / area.clamp_min(1e-6)
    centers = torch.stack([x, y], 1)  # [B, 2]

    # 4. shape
    shape_score, shape_index = _best_shape(coverage, centers, area, scale)

    # 5. position: the nearest anchor
    anchors = torch.tensor([ANCHORS[p] for p in POSITIONS]) * scale  # [5, 2]
    anchor_distance, position_index = torch.cdist(centers, anchors).min(1)

    stray = (~near_blob & (distance > FAINT)).flatten(1).sum(1)
    hole_area = holes.flatten(1).sum(1).float()
    hole_share = hole_area / (blob | holes).flatten(1).sum(1).clamp_min(1).float()

    measured = {
        "n_blobs": n_blobs,
        "area": area,
        "center": centers,
        "color_distance": color_distance,
        "shape_score": shape_score,
        "anchor_distance": anchor_distance,
        "stray": stray,
        "color_index": color_index,
        "shape_index": shape_index,
        "position_index": position_index,
        "hole_area": hole_area,
        "hole_share": hole_share,
    }
    rows = zip(*(values.tolist() for values in measured.values()))
    return [_verdict(dict(zip(measured, row)), scale) for row in rows]



def _blob_colour(images: torch.Tensor, blob: torch.Tensor, distance: torch.Tensor):
    """The blob's colour [B, 3] and the nearest palette colour: (colour, its distance, index).

    The mean of the inner pixels (the rim is blended with the background), or, when the blob is
    too thin to have an inside (an outline), of its stronger half. images [B, 3, H, W]; blob and
    distance (from the background) [B, H, W].
    """
    batch = len(images)
    inner = blob & _erode(blob)
    strong = blob & (distance >= _masked_median(distance, blob).view(batch, 1, 1))
    core = torch.where(inner.flatten(1).sum(1).view(batch, 1, 1) >= 3, inner, strong)
    core_weight = core.float().unsqueeze(1)
    color = (images * core_weight).sum((2, 3)) / core_weight.sum((2, 3)).clamp_min(1)  # [B, 3]
    # a blurred shape's colour is dimmed towards the background: compare with the palette colours
    # blended with the background by up to 1 - MIN_STRENGTH (the nearest point of that segment)
    towards = _PALETTE - _BACKGROUND  # [4, 3]
    strength = ((color - _BACKGROUND) @ towards.T) / towards.pow(2).sum(1)  # [B, 4]
    dimmed = _BACKGROUND + strength.clamp(MIN_STRENGTH, 1).unsqueeze(2) * towards  # [B, 4, 3]
    color_distance, color_index = (color.unsqueeze(1) - dimmed).norm(dim=2).min(1)
    return color, color_distance, color_index


def _best_shape(coverage: torch.Tensor, centers: torch.Tensor, area: torch.Tensor,
                scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(score, index) [B] of the shape whose ideal drawing, of the same area and centre, sharp or
    blurred, overlaps ``coverage`` [B, H, W] best (intersection over union)."""
    batch, size = len(coverage), coverage.shape[-1]
    scores = []
    for index, name in enumerate(SHAPES):
        extents = (area / AREA_FACTOR[name]).sqrt()
        sharp = shape_coverage(torch.full((batch,), index), centers, extents, size)
        best = torch.zeros(batch)
        for sigma in TEMPLATE_BLURS:
            ideal = _blur(sharp, sigma * scale)
            overlap = torch.minimum(coverage, ideal).sum((1, 2))
            union = torch.maximum(coverage, ideal).sum((1, 2)).clamp_min(1e-6)
            best = torch.maximum(best, overlap / union)
        scores.append(best)
    return torch.stack(scores, 1).max(1)


def _verdict(m: dict, scale: float) -> dict:
    """Names and problems from the measurements ``m`` of one image (``scale`` = its size / 32)."""
    sized = AREA_RANGE[0] * scale**2 <= m["area"] <= AREA_RANGE[1] * scale**2
    judged = m["n_blobs"] > 0 and sized  # attributes are read off a plausible shape only
    color = ALL_COLORS[m["color_index"]] if m["color_distance"] <= COLOR_TOLERANCE else None
    shape = SHAPES[m["shape_index"]] if m["shape_score"] >= MIN_SHAPE_SCORE else None
    near = m["anchor_distance"] <= POSITION_TOLERANCE * scale
    position = POSITIONS[m["position_index"]] if near else None
    outline = (m["hole_share"] >= OUTLINE_HOLE_SHARE and m["hole_area"] >= MIN_HOLE * scale**2)
    style = "outline" if outline else "filled"
    if not judged:
        color = shape = position = style = None
    found = {"color": color, "shape": shape, "position": position, "style": style}
    failing = {
        "no_shape": m["n_blobs"] == 0,
        "several_shapes": m["n_blobs"] > 1,
        "wrong_size": not sized,
        "unknown_color": found["color"] is None,
        "unknown_shape": found["shape"] is None,
        "unknown_position": found["position"] is None,
        "stray_pixels": m["stray"] > MAX_STRAY * scale**2,
    }
    problem = next((name for name in PROBLEMS if failing[name]), None)
    return {
        **found,
        "clean": problem is None,
        "problem": problem,
        "n_blobs": m["n_blobs"],
        "area": m["area"],
        "center": tuple(m["center"]),
        "color_distance": m["color_distance"],
        "shape_score": m["shape_score"],
        "stray": m["stray"],
        "hole_share": m["hole_share"],
    }


def attribute_spread(images: torch.Tensor) -> dict[str, float]:
    """How much the images of one prompt (many seeds) differ: standard deviations over the batch
    [B, 3, H, W] in [-1, 1] of the shape's size (the square root of its area, in pixels), its
    centre (pixels; the root mean square of the x and y deviations) and its shade (the mean
    colour of its foreground pixels; the root of the summed RGB variances, in [-1, 1] units).

    Guidance trades this spread for adherence (Ho and Salimans 2022): at a high scale every seed
    draws nearly the same shape, in the same place, in the same shade."""
    found = analyze_images(images)
    images = images.detach().float().cpu().clamp(-1, 1)
    side = torch.tensor([f["area"] for f in found]).clamp_min(0).sqrt()  # [B]
    centers = torch.tensor([f["center"] for f in found])  # [B, 2]
    foreground = ((images - _BACKGROUND.view(1, 3, 1, 1)).norm(dim=1) > FOREGROUND).unsqueeze(1)
    shade = (images * foreground).sum((2, 3)) / foreground.sum((2, 3)).clamp_min(1)  # [B, 3]
    return {"size": side.std().item(),
            "position": centers.var(0).sum().div(2).sqrt().item(),
            "shade": shade.var(0).sum().sqrt().item()}


def enclosed(mask: torch.Tensor) -> torch.Tensor:
    """The pixels of [B, H, W] that ``mask`` encloses: not in it, and cut off from the border
    by it (8-neighbour paths of non-mask pixels). An outline's inside; empty for a solid shape."""
    batch, height, width = mask.shape
    outside_labels = label_components(~mask)
    slots = height * width + 1
    keys = outside_labels + slots * torch.arange(batch).view(batch, 1, 1)
    border = torch.zeros(height, width, dtype=torch.bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    reaching = keys[:, border][~mask[:, border]].unique()
    return ~mask & ~torch.isin(keys, reaching)


def _masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The median of ``values`` [B, H, W] over each image's ``mask`` (0 where it is empty)."""
    ordered = torch.where(mask, values, torch.tensor(float("inf"))).flatten(1).sort(1).values
    count = mask.flatten(1).sum(1)
    middle = ((count - 1).clamp_min(0) // 2).view(-1, 1)
    return torch.where(count > 0, ordered.gather(1, middle).squeeze(1), torch.zeros(len(count)))


def analyze_image(image: torch.Tensor) -> dict:
    """What one image [3, H, W] in [-1, 1] shows.

    Returns:
        dict with ``color``, ``shape``, ``position`` (names from the world, or None when they
        cannot be decided), ``style`` ("filled" or "outline"), ``clean`` (bool) and ``problem``
        (None, or the first of PROBLEMS that applies), plus the measurements behind them:
        ``n_blobs``, ``area`` (pixels), ``center`` (x, y), ``color_distance`` (to the nearest
        palette colour), ``shape_score`` (overlap with the best ideal shape, 0-1), ``stray``
        (stray pixels) and ``hole_share`` (enclosed background over the filled shape).
    """
    return analyze_images(torch.as_tensor(image).unsqueeze(0))[0]


def prompt_adherence(images: torch.Tensor, captions: list[str],
                     style: str | None = None) -> dict:
    """How often images [B, 3, H, W] show what their captions ask for.

    An attribute the analysis cannot decide counts as wrong. "all" needs all three right; it does
    not ask for a clean image (see ``sample_quality`` for that; "clean" is reported alongside).
    style: "filled" or "outline" to also ask for that style; "all" then needs it too.

    Returns:
        {"color", "shape", "position", "all", "clean": fractions in [0, 1], "n": B}, and
        "style" when a style is asked for
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(captions) == 0:
        raise ValueError("no images to judge")
    wanted = [parse_caption(text) for text in captions]
    found = analyze_images(images)
    if style is not None:
        wanted = [w | {"style": style} for w in wanted]
    keys = ("color", "shape", "position") + (("style",) if style is not None else ())
    right = {key: [f[key] == w[key] for f, w in zip(found, wanted)] for key in keys}
    right["all"] = [all(hits) for hits in zip(*right.values())]
    right["clean"] = [f["clean"] for f in found]
    return {key: sum(hits) / len(hits) for key, hits in right.items()} | {"n": len(captions)}


def sample_quality(images: torch.Tensor) -> dict:
    """How many unconditional samples [B, 3, H, W] are one clean shape, and what the rest got wrong.

    Returns:
        {"n": B, "clean": fraction, one fraction per problem in PROBLEMS (with "clean" they sum
        to 1), "colors" / "shapes" / "positions": counts of each name among the clean images}
    """
    if len(images) == 0:
        raise ValueError("no images to judge")
    found = analyze_images(images)
    problems = Counter(f["problem"] for f in found)
    clean = [f for f in found if f["clean"]]
    return {
        "n": len(found),
        "clean": len(clean) / len(found),
        **{name: problems[name] / len(found) for name in PROBLEMS},
        "colors": {c: sum(f["color"] == c for f in clean) for c in COLORS},
        "shapes": {s: sum(f["shape"] == s for f in clean) for s in SHAPES},
        "positions": {p: sum(f["position"] == p for f in clean) for p in POSITIONS},
    }
