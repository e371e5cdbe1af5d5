"""What an exercise is made of: its cases and known mistakes, and what one call of the learner's
function gave back (an :class:`Answer`, before any verdict).

A case builds its inputs from seeded generators of its own, so it is the same on every run and
never draws from the learner's global random state; the learner's function (and each known
mistake) gets a deep copy of them (:func:`clone_inputs`), never what the oracle computes with.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .status import Status


@dataclass(frozen=True)
class Case:
    """One call of the learner's function and what must come back.

    ``make_inputs`` builds the keyword arguments (seeded, so a case is the same every run).
    ``verify(inputs, got)`` returns None when ``got`` is right, else what is wrong; it computes
    the oracle from its own copy of the inputs. A case that expects an exception sets
    ``raises`` instead of ``verify``. A ``hidden`` case is run only when grading.
    """

    name: str
    make_inputs: Callable[[], dict[str, Any]]
    verify: Callable[[dict[str, Any], Any], str | None] | None = None
    raises: type[BaseException] | None = None
    hidden: bool = False


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer, so a check can say which slip the learner most likely made.

    ``fn`` takes the same arguments as the learner's function and returns what that mistake
    returns (say, ``alpha_bar * x0`` without the square root). ``explanation`` says what the
    mistake is in one sentence, without giving away the solution line.
    """

    name: str
    fn: Callable[..., Any]
    explanation: str


@dataclass
class Answer:
    """What the learner's function did on one case, before any verdict.

    ``status``: one of :data:`~course.checks.status.ANSWER_STATUSES` (``value`` holds the result
    when it is ``returned``; ``raised`` is the exception the case expects; the grader passes on
    whatever text the kernel sent, and anything else is judged an unreadable answer);
    ``message`` says what happened; ``changed`` names the tensor inputs the function modified
    in place.
    """

    status: Status
    value: Any = None
    message: str = ""
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def seeded(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed: every case draws the same inputs on every run."""
    return torch.Generator().manual_seed(seed)


def clone_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """A deep copy, so the learner's function can neither see nor spoil the oracle's inputs.

    Modules are copied too: a function that changes a layer's weights (or a pipeline's U-Net)
    changes its own copy, never what the oracle computes with. Objects shared between inputs
    stay shared in the copy (one memo). A loss is still checked by its gradients: ``capture``
    takes them in the learner's copy, whose parameters hold the same values.
    """
    memo: dict[int, Any] = {}

    def copy_of(value):
        if isinstance(value, torch.Tensor) and not value.is_leaf:
            return value.detach().clone()  # deepcopy refuses a tensor that carries a graph
        return copy.deepcopy(value, memo)

    return {k: copy_of(v) for k, v in inputs.items()}
