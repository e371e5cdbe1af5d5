"""Data the lessons use: bundled real photos (and, later, the captioned-shapes world)."""

from .photos import PHOTOS, load_photo, to_pil

__all__ = ["PHOTOS", "load_photo", "to_pil"]
