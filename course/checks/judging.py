"""Comparing answers: with the oracle (a sentence saying what differs and where) and with the
answers of the known mistakes (whether they agree, and how closely)."""

from __future__ import annotations

import math
from typing import Any

import torch

#: How close the learner's answer must be to a known mistake's answer to be called that mistake.
MISTAKE_ATOL, MISTAKE_RTOL = 1e-4, 1e-3


def describe(value: Any) -> str:
    """A short description of a value: a tensor's shape and dtype, or a repr trimmed to fit."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 4:
            return f"tensor({value.tolist()}, dtype={value.dtype})"
        return f"tensor of shape {list(value.shape)}, dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe(v) for v in value[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"{type(value).__name__} of {len(value)}: ({inner}{more})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def index_text(flat: int, shape: torch.Size | tuple[int, ...]) -> str:
    """A flat position as the index a learner would type: "(b=0, c=2, h=5, w=7)" or "(1, 3)".

    Images are [B, C, H, W] throughout the course, so a 4-D index names its axes.
    """
    index = [int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(shape))]
    if len(index) == 4:
        return "(" + ", ".join(f"{axis}={i}" for axis, i in zip("bchw", index)) + ")"
    return "(" + ", ".join(map(str, index)) + ")"


def compare_tensor(
    name: str, got: Any, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4
) -> str | None:
    """None when ``got`` matches ``expected``; otherwise what differs and where, in one sentence.

    Checked in the order a learner can act on: type, shape, dtype, finiteness, values.
    """
    if not isinstance(got, torch.Tensor):
        return f"{name}: expected a torch.Tensor, got {describe(got)}"
    if got.shape != expected.shape:
        return f"{name}: expected shape {list(expected.shape)}, got {list(got.shape)}"
    if got.dtype != expected.dtype:
        return f"{name}: expected dtype {expected.dtype}, got {got.dtype}"
    finite = torch.isfinite(got)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        first = int((~finite).flatten().nonzero()[0])
        where = f", the first at index {index_text(first, got.shape)}" if got.ndim else ""
        return f"{name}: {bad} of {got.numel()} values are NaN or inf{where}"
    got_cpu, expected_cpu = got.detach().cpu().double(), expected.detach().cpu().double()
    if not torch.allclose(got_cpu, expected_cpu, atol=atol, rtol=rtol):
        error = (got_cpu - expected_cpu).abs()
        wrong = int((error > atol + rtol * expected_cpu.abs()).sum())
        worst = int(error.argmax())
        where = f"at index {index_text(worst, got.shape)}" if got.ndim else "the value"
        return (
            f"{name}: values differ in {wrong} of {got.numel()} entries, max |got - expected| = "
            f"{error.max().item():.3g} (tolerance {atol:g}); {where}: expected "
            f"{expected_cpu.flatten()[worst].item():.6g}, got {got_cpu.flatten()[worst].item():.6g}"
        )
    return None


def same_answer(got: Any, other: Any, atol: float = MISTAKE_ATOL,
                rtol: float = MISTAKE_RTOL) -> bool:
    """Whether two answers agree: tensors (same shape and dtype, close values), numbers, None,
    or tuples/lists of these, element by element. Anything else never agrees."""
    if isinstance(got, torch.Tensor) and isinstance(other, torch.Tensor):
        return _same_tensor(got, other, atol, rtol)
    if isinstance(got, (tuple, list)) and isinstance(other, (tuple, list)):
        return len(got) == len(other) and all(
            same_answer(a, b, atol, rtol) for a, b in zip(got, other))
    if isinstance(got, dict) and isinstance(other, dict):
        return got.keys() == other.keys() and all(
            same_answer(got[k], other[k], atol, rtol) for k in got)
    numbers = (int, float)
    if isinstance(got, numbers) and isinstance(other, numbers):
        return math.isclose(got, other, rel_tol=rtol, abs_tol=atol)
    return got is None and other is None


def _same_tensor(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach().cpu(), b.detach().cpu()
    if not (a.is_floating_point() or a.is_complex()):
        return torch.equal(a, b)
    # NaN never agrees: a broken answer is not evidence of a particular mistake.
    return bool(torch.allclose(a.to(torch.complex128 if a.is_complex() else torch.float64),
                               b.to(torch.complex128 if b.is_complex() else torch.float64),
                               atol=atol, rtol=rtol))


def distance(got: Any, other: Any) -> float:
    """The largest absolute difference between two answers that :func:`same_answer` accepts."""
    if isinstance(got, torch.Tensor):
        if got.numel() == 0:
            return 0.0
        diff = got.detach().cpu().to(torch.float64) - other.detach().cpu().to(torch.float64)
        return float(diff.abs().max())
    if isinstance(got, (tuple, list)):
        return max((distance(a, b) for a, b in zip(got, other)), default=0.0)
    if isinstance(got, dict):
        return max((distance(got[k], other[k]) for k in got), default=0.0)
    if isinstance(got, (int, float)):
        return abs(float(got) - float(other))
    return 0.0
