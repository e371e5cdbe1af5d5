"""Every lesson's exercises, found where the lessons declare them.

Each module ``lessonNN`` of this package declares its exercises in a list ``EXERCISES`` (a
``demo`` exercise included, which is shown but not graded). The catalog finds those modules by
their names, so a new lesson is a new module and nothing else. It is what finds exercises for the
grader (:func:`exercises_for`) and by name for the learner (:func:`hint`), and it refuses two
exercises of the same name: a hint or a grade must never reach the wrong one.

The lesson modules sit above the catalog (they import :func:`hint` from here); the catalog
imports them only when asked for their exercises, never when it is itself imported.
"""

from __future__ import annotations

import pkgutil
import re
from collections.abc import Callable
from functools import cached_property
from importlib import import_module
from typing import Any

from .exercise import Exercise
from .hints import Hint, HintMessage, next_hint_of
from .reports import show

#: A lesson's module of checks, and the lesson's number: ``lesson01`` is lesson "01".
LESSON_MODULE = re.compile(r"lesson(\d\d)")


class DuplicateExercise(ValueError):
    """Two declared exercises share a name."""


class Catalog:
    """The exercises declared by the ``lessonNN`` modules of one package."""

    def __init__(self, package: str):
        self.package = package

    @cached_property
    def lessons(self) -> dict[str, str]:
        """Lesson number -> the module that declares its exercises, in lesson order."""
        path = import_module(self.package).__path__
        found = {match[1]: f"{self.package}.{info.name}" for info in pkgutil.iter_modules(path)
                 if (match := LESSON_MODULE.fullmatch(info.name))}
        return dict(sorted(found.items()))

    def declared(self, lesson: str) -> list[Exercise]:
        """Every exercise lesson ``lesson`` declares, a demo included; KeyError for a lesson
        without checks, TypeError for a module that declares no ``EXERCISES``."""
        if lesson not in self.lessons:
            raise KeyError(f"no checks for lesson {lesson!r}; known lessons: "
                           f"{sorted(self.lessons)}")
        module = import_module(self.lessons[lesson])
        exercises = getattr(module, "EXERCISES", None)
        if not isinstance(exercises, (list, tuple)) or \
                not all(isinstance(e, Exercise) for e in exercises):
            raise TypeError(f"{module.__name__} must declare EXERCISES, a list of the lesson's "
                            "Exercise objects")
        return list(exercises)

    def graded(self, lesson: str) -> list[Exercise]:
        """The exercises the grader scores in lesson ``lesson`` (all but a demo)."""
        return [e for e in self.declared(lesson) if not e.demo]

    @cached_property
    def by_name(self) -> dict[str, Exercise]:
        """Every declared exercise by name; DuplicateExercise if a name is declared twice.

        A lesson whose module cannot be imported (a library it needs is missing) is left out,
        so that it cannot hide the others' hints.
        """
        found: dict[str, Exercise] = {}
        where: dict[str, str] = {}
        for lesson, module in self.lessons.items():
            try:
                exercises = self.declared(lesson)
            except ImportError:
                continue
            for exercise in exercises:
                if exercise.name in found:
                    raise DuplicateExercise(
                        f"two exercises are named {exercise.name!r}: one in {where[exercise.name]}"
                        f", one in {module}; every exercise needs a name of its own")
                found[exercise.name], where[exercise.name] = exercise, module
        return found

    def find(self, exercise_or_name: Exercise | str | Callable[..., Any]) -> Exercise | None:
        """The exercise meant: itself, the one of that name, or the first whose function has
        that name (a class may be the function of two exercises); None if there is none."""
        if isinstance(exercise_or_name, Exercise):
            return exercise_or_name
        name = _name_of(exercise_or_name)
        if name in self.by_name:
            return self.by_name[name]
        return next((e for e in self.by_name.values() if e.function == name), None)


#: The course's own lessons: the ``lessonNN`` modules next to this one.
CATALOG = Catalog(__package__)


def lessons() -> dict[str, str]:
    """Every lesson with checks: its number -> the module that declares its exercises."""
    return dict(CATALOG.lessons)


def exercises_for(lesson: str) -> list[Exercise]:
    """The graded exercises of a lesson ("01", ...); KeyError for an unknown lesson."""
    return CATALOG.graded(lesson)


def find_exercise(exercise_or_name: Exercise | str | Callable[..., Any]) -> Exercise | None:
    """The exercise of that name (or of the learner's function of that name), if any."""
    return CATALOG.find(exercise_or_name)


def next_hint(exercise_or_name: Exercise | str | Callable[..., Any]) -> Hint | HintMessage:
    """What :func:`hint` shows, and the step to the next tier; returned rather than displayed."""
    exercise = find_exercise(exercise_or_name)
    if exercise is None:
        known = ", ".join(sorted(CATALOG.by_name)) or "none loaded"
        return HintMessage(f"There is no exercise named {_name_of(exercise_or_name)!r}. "
                           f"Known exercises: {known}.")
    return next_hint_of(exercise)


def hint(exercise_or_name: Exercise | str | Callable[..., Any]) -> None:
    """Show the next hint for an exercise; each call is more explicit, the last is the solution.

    ``exercise_or_name`` is an :class:`Exercise`, its name (``check.hint("forward_diffusion")``)
    or the learner's function of that name. An unknown name lists the known ones instead.
    """
    show(next_hint(exercise_or_name))


def _name_of(value: Any) -> str:
    return value if isinstance(value, str) else getattr(value, "__name__", repr(value))
