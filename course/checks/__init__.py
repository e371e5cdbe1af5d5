"""Exercise checks, one module per lesson.

In a lesson::

    from course.checks import lesson01 as check
    check.forward_diffusion(forward_diffusion)   # shows a verdict per case
    check.hint("forward_diffusion")              # the next hint, the solution line last

The grader runs the same exercises with their hidden cases (see ``course.grading``).
"""

from __future__ import annotations

from importlib import import_module

from .core import (
    MIME,
    Case,
    CaseResult,
    Exercise,
    ExerciseReport,
    Mistake,
    compare_tensor,
    hint,
    time_limit,
)

#: lesson id -> module name of its checks
LESSONS = {"00": "lesson00", "01": "lesson01", "02": "lesson02", "03": "lesson03",
           "04": "lesson04", "05": "lesson05", "06": "lesson06", "07": "lesson07"}


def exercises_for(lesson: str) -> list[Exercise]:
    """The graded exercises of a lesson ("01", ...); KeyError for an unknown lesson."""
    if lesson not in LESSONS:
        raise KeyError(f"no checks for lesson {lesson!r}; known lessons: {sorted(LESSONS)}")
    return list(import_module(f".{LESSONS[lesson]}", __name__).EXERCISES)


__all__ = ["MIME", "Case", "CaseResult", "Exercise", "ExerciseReport", "LESSONS", "Mistake",
           "compare_tensor", "exercises_for", "hint", "time_limit"]
