"""Lesson 00 has no graded exercise; ``to_model_range`` is the demo that shows how checks work
(declared with ``demo=True``: shown and hinted like any other, never graded).

Oracle: torch's own arithmetic, uint8 [0, 255] -> float32 [-1, 1]. The known mistakes and the
hints are there to be seen at work: the lesson makes the first mistake on purpose.
"""

from __future__ import annotations

import torch

from .cases import Case, Mistake
from .catalog import hint
from .exercise import Exercise
from .judging import compare_tensor

__all__ = ["EXERCISES", "hint", "to_model_range"]


def _pixels(shape, seed):
    def make():
        gen = torch.Generator().manual_seed(seed)
        return {"pixels": torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)}

    return make


def _verify(inputs, got):
    expected = inputs["pixels"].to(torch.float32) / 127.5 - 1.0
    return compare_tensor("images", got, expected, atol=1e-6)


def _doubled_in_uint8(pixels):
    return (pixels * 2).to(torch.float32) / 255 - 1  # 200 * 2 wraps round to 144


def _only_to_unit_range(pixels):
    return pixels.to(torch.float32) / 255


def _no_shift(pixels):
    return pixels.to(torch.float32) / 127.5


to_model_range = Exercise(
    name="to_model_range",
    function="to_model_range",
    demo=True,
    cases=[
        Case("a 2x2 RGB image [3, 2, 2]", _pixels((3, 2, 2), 0), _verify),
        Case("a batch [4, 3, 8, 8]", _pixels((4, 3, 8, 8), 1), _verify),
        Case("black and white pixels map to exactly -1 and 1",
             lambda: {"pixels": torch.tensor([[[0, 255]]], dtype=torch.uint8)}, _verify),
    ],
    mistakes=[
        Mistake("arithmetic in uint8", _doubled_in_uint8,
                "the pixels were multiplied while still uint8, which holds only 0 .. 255: "
                "anything above wraps round (200 * 2 becomes 144)."),
        Mistake("scaled to [0, 1]", _only_to_unit_range,
                "the values lie in [0, 1]; the model range is twice as wide and centred on 0."),
        Mistake("not shifted", _no_shift,
                "the values lie in [0, 2]: the scale is right, the shift by -1 is missing."),
    ],
    hints=[
        "Map the two ends first: 0 must become -1 and 255 must become 1, with a straight line "
        "in between.",
        "Convert to float before any arithmetic (.to(torch.float32)): uint8 holds only "
        "0 .. 255 and wraps round silently.",
        "return pixels.to(torch.float32) / 127.5 - 1.0",
    ],
)

EXERCISES = [to_model_range]
