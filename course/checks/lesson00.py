"""Lesson 00 has no graded exercise; ``to_model_range`` is the demo that shows how checks work.

Oracle: torch's own arithmetic, uint8 [0, 255] -> float32 [-1, 1].
"""

from __future__ import annotations

import torch

from .core import Case, Exercise, compare_tensor


def _pixels(shape, seed):
    def make():
        gen = torch.Generator().manual_seed(seed)
        return {"pixels": torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)}

    return make


def _verify(inputs, got):
    expected = inputs["pixels"].to(torch.float32) / 127.5 - 1.0
    return compare_tensor("images", got, expected, atol=1e-6)


to_model_range = Exercise(
    name="to_model_range",
    function="to_model_range",
    demo=True,
    cases=[
        Case("a 2x2 RGB image [3, 2, 2]", _pixels((3, 2, 2), 0), _verify,
             hint="scale [0, 255] to [-1, 1]: pixels / 127.5 - 1, as float32"),
        Case("a batch [4, 3, 8, 8]", _pixels((4, 3, 8, 8), 1), _verify,
             hint="convert with .float() before dividing: uint8 arithmetic wraps around"),
        Case("black and white pixels map to exactly -1 and 1",
             lambda: {"pixels": torch.tensor([[[0, 255]]], dtype=torch.uint8)}, _verify,
             hint="0 -> -1.0 and 255 -> 1.0"),
    ],
)

EXERCISES: list[Exercise] = []  # the demo is not graded
