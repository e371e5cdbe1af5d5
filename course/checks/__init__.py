"""Exercise checks, one module per lesson.

In a lesson::

    from course.checks import lesson01 as check
    check.forward_diffusion(forward_diffusion)   # shows a verdict per case
    check.hint("forward_diffusion")              # the next hint, the solution line last

The grader runs the same exercises with their hidden cases (see ``course.grading``).

One module per concern: ``cases`` (cases, known mistakes, answers), ``judging`` (comparing
answers), ``limits`` (time limit, random state), ``reports`` (verdicts and how they show),
``hints`` (tiers on request), ``exercise`` (running and judging), ``oracles`` (what the
lessons' oracles share), ``status`` (the statuses the checks and the grader share),
``catalog`` (the lessons' exercises, found from each ``lessonNN`` module's ``EXERCISES``).
"""

from __future__ import annotations

from .cases import Answer, Case, Mistake
from .catalog import exercises_for, find_exercise, hint, lessons, next_hint
from .exercise import Exercise
from .hints import reset_hints
from .judging import compare_tensor
from .limits import time_limit
from .reports import MIME, CaseResult, ExerciseReport
from .status import Status

__all__ = ["MIME", "Answer", "Case", "CaseResult", "Exercise", "ExerciseReport", "Mistake",
           "Status", "compare_tensor", "exercises_for", "find_exercise", "hint", "lessons",
           "next_hint", "reset_hints", "time_limit"]
