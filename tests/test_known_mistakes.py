"""Every known mistake of every lesson, found through the catalog: fed to its exercise as a
learner's function, on the public and the hidden cases as the grader runs them, it fails and
the report names it.

A mistake declares the function that makes it (``Mistake.fn``: a function, a partial, or a
class where the exercise's answer is a class); it is wrapped as a learner's own code, since
the checks refuse the package's.
"""

import pytest

from course.checks import Status, lessons
from course.checks.catalog import CATALOG
from course.checks.judging import same_answer
from course.checks.limits import preserved_rng
from tests.helpers import as_learner

KNOWN_MISTAKES = [(lesson, exercise, mistake) for lesson in lessons()
                  for exercise in CATALOG.declared(lesson) for mistake in exercise.mistakes]


def test_every_lesson_has_known_mistakes_to_test():
    assert {lesson for lesson, _, _ in KNOWN_MISTAKES} == set(lessons())


def _indistinguishable(exercise, case, one, other) -> bool:
    """Whether two mistakes give the same answer on ``case``: there, either name is right (at
    w = 0 swapping cfg_combine's arguments is the (1 + w) convention, say)."""
    inputs = case.make_inputs()
    with preserved_rng():
        return same_answer(exercise.answer_of(one, inputs), exercise.answer_of(other, inputs))


@pytest.mark.parametrize(("lesson", "exercise", "mistake"), KNOWN_MISTAKES,
                         ids=[f"{lesson} {e.name}: {m.name}" for lesson, e, m in KNOWN_MISTAKES])
def test_each_known_mistake_fails_and_is_named(lesson, exercise, mistake):
    report = exercise.run(as_learner(mistake.fn), include_hidden=True)
    # A slip may raise on some cases (a missing reshape, A and B swapped on a layer that is not
    # square): that is an error to report, not a mistake to name. Every answer that came back
    # wrong is named: this mistake, or one that gives the very same answer on that case.
    assert {case.status for case in report.cases} <= {Status.PASS, Status.FAIL, Status.ERROR}, \
        str(report)
    failed = [case for case in report.cases if case.status == Status.FAIL]
    assert failed, f"{mistake.name} fails no case: the check cannot see it\n{report}"
    assert mistake.name in {case.mistake for case in failed}, str(report)
    by_name = {m.name: m for m in exercise.mistakes}
    cases = {case.name: case for case in exercise.cases}
    for result in failed:
        assert result.mistake, f"{result.name}: no mistake named\n{report}"
        if result.mistake != mistake.name:
            assert _indistinguishable(exercise, cases[result.name], mistake,
                                      by_name[result.mistake]), \
                f"{result.name}: named {result.mistake!r}, which answers otherwise\n{report}"
