"""Hints on request, in tiers: each request for an exercise shows the next of its ``hints``,
gentle first, the solution line last; asking again after the last repeats it.

How far each exercise's hints have gone is kept per exercise name for the whole kernel.
:func:`~course.checks.catalog.hint` finds the exercise a learner names and shows what
:func:`next_hint_of` gives.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .exercise import Exercise

# How many hints of each exercise (by name) the learner has seen so far.
_HINTS_SHOWN: dict[str, int] = {}


@dataclass
class Hint:
    """One hint as shown to the learner: tier ``number`` of ``total`` for ``exercise``."""

    exercise: str
    number: int
    total: int
    text: str
    is_solution: bool = False

    def title(self) -> str:
        if self.is_solution:
            return f"{self.exercise}: the solution (hint {self.number} of {self.total})"
        return f"{self.exercise}: hint {self.number} of {self.total}"

    def footer(self) -> str:
        if self.number < self.total:
            return f'Run check.hint("{self.exercise}") again for a more explicit hint.'
        return "" if self.is_solution else "That was the last hint."

    def __str__(self) -> str:
        return "\n".join(line for line in (self.title(), f"  {self.text}", self.footer()) if line)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        footer = f"<br><i>{html.escape(self.footer())}</i>" if self.footer() else ""
        text = html.escape(self.text)
        text = f"<code>{text}</code>" if self.is_solution else text  # the solution is code
        return (f"<div class='course-hint'><b>{html.escape(self.title())}</b><br>"
                f"{text}{footer}</div>")


@dataclass
class HintMessage:
    """Something shown instead of a hint (an unknown name, no hints written)."""

    text: str

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<div class='course-hint'>{html.escape(self.text)}</div>"


def next_hint_of(exercise: Exercise) -> Hint | HintMessage:
    """The next tier of ``exercise``'s hints (the last one again once all were shown)."""
    tiers = exercise.hints
    if not tiers:
        return HintMessage(f"{exercise.name} has no hints yet: the check's message is the best "
                           "guide to what to change.")
    number = min(_HINTS_SHOWN.get(exercise.name, 0) + 1, len(tiers))
    _HINTS_SHOWN[exercise.name] = number
    return Hint(exercise.name, number, len(tiers), tiers[number - 1],
                is_solution=number == len(tiers))


def reset_hints(name: str | None = None) -> None:
    """Start the hints of one exercise (or of all) from the first tier again."""
    if name is None:
        _HINTS_SHOWN.clear()
    else:
        _HINTS_SHOWN.pop(name, None)
