"""Recipes as data: a dataclass of everything that decides what a training run produces, stored
as JSON next to the weights and read back into the same dataclass.

A field holding a config with ``to_dict`` / ``from_dict`` (``TinyUNetConfig``, ``TinySDConfig``) is
stored through them; a tuple becomes a JSON list and comes back a tuple.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, fields, replace


class JSONRecipe:
    """Mixin for a recipe dataclass: ``to_dict`` (JSON-ready) and ``from_dict`` (its inverse)."""

    def to_dict(self) -> dict:
        data = asdict(self)
        for f in fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "to_dict"):
                data[f.name] = value.to_dict()
            elif isinstance(value, tuple):
                data[f.name] = list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict):
        hints = typing.get_type_hints(cls)
        data = dict(data)
        for name, value in data.items():
            kind = hints.get(name)
            if hasattr(kind, "from_dict") and isinstance(value, dict):
                data[name] = kind.from_dict(value)
            elif typing.get_origin(kind) is tuple and isinstance(value, list):
                data[name] = tuple(value)
        return cls(**data)


def with_overrides(recipe, overrides: dict):
    """``recipe`` with every field in ``overrides`` that is not None replaced (the options a
    command line was given)."""
    return replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
