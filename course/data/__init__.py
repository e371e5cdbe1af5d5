"""Data the lessons use: the captioned-shapes world and bundled real photos."""

from .photos import PHOTOS, load_photo, to_pil
from .shapes import (
    COLORS,
    HELDOUT,
    POSITIONS,
    SHAPES,
    Combo,
    all_combinations,
    caption,
    parse_caption,
    render_shape,
    shapes_dataset,
)

__all__ = [
    "COLORS",
    "HELDOUT",
    "PHOTOS",
    "POSITIONS",
    "SHAPES",
    "Combo",
    "all_combinations",
    "caption",
    "load_photo",
    "parse_caption",
    "render_shape",
    "shapes_dataset",
    "to_pil",
]
