"""The catalog finds each lesson's exercises in its ``lessonNN`` module's ``EXERCISES``: a new
lesson needs no edit elsewhere, and two exercises of one name are refused."""

import sys
import textwrap

import pytest

from course.checks import Exercise, exercises_for, find_exercise, hint, lessons
from course.checks.catalog import CATALOG, Catalog, DuplicateExercise

LESSON = """
from course.checks import Case, Exercise

{name} = Exercise({name!r}, "f", [Case("one", dict)], demo={demo})
EXERCISES = [{name}]
"""


@pytest.fixture
def package(tmp_path, monkeypatch):
    """Make a package of lesson modules: ``make(name, {module: source})`` -> its name."""
    made = []

    def make(name, modules):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        for module, source in modules.items():
            (folder / f"{module}.py").write_text(textwrap.dedent(source))
        made.append(name)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for name in made:
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[module]


def test_every_course_lesson_declares_its_exercises():
    assert list(lessons()) == sorted(lessons()) and {"00", "01", "07"} <= set(lessons())
    for lesson, module in lessons().items():
        assert module == f"course.checks.lesson{lesson}"
        declared = CATALOG.declared(lesson)
        assert declared == list(sys.modules[module].EXERCISES)
        assert all(isinstance(e, Exercise) for e in declared)
        assert exercises_for(lesson) == [e for e in declared if not e.demo]
    # lesson 00 declares its demo: hinted by name, never graded
    assert [e.name for e in CATALOG.declared("00")] == ["to_model_range"]
    assert exercises_for("00") == []


def test_course_exercise_names_are_unique_and_all_found():
    declared = [e for lesson in lessons() for e in CATALOG.declared(lesson)]
    assert sorted(CATALOG.by_name) == sorted(e.name for e in declared)
    assert all(find_exercise(e.name) is e for e in declared)


def test_a_new_lesson_module_is_found_without_an_edit_elsewhere(package):
    name = package("checks_new", {
        "lesson07": LESSON.format(name="seven", demo=False),
        "lesson08": LESSON.format(name="eight", demo=False),
        "lesson08_helpers": "VALUE = 1\n",  # not a lesson: the name must be lessonNN
        "helpers": "VALUE = 2\n"})
    catalog = Catalog(name)
    assert catalog.lessons == {"07": f"{name}.lesson07", "08": f"{name}.lesson08"}
    assert [e.name for e in catalog.graded("08")] == ["eight"]
    assert catalog.find("eight") is sys.modules[f"{name}.lesson08"].eight
    assert catalog.find("f").name == "seven"  # by function name: the first lesson's
    with pytest.raises(KeyError, match="no checks for lesson '09'"):
        catalog.graded("09")


def test_a_demo_is_declared_and_found_but_not_graded(package):
    catalog = Catalog(package("checks_demo", {"lesson00": LESSON.format(name="demo",
                                                                         demo=True)}))
    assert [e.name for e in catalog.declared("00")] == ["demo"] and catalog.graded("00") == []
    assert catalog.find("demo").demo


def test_two_exercises_of_one_name_are_an_error_naming_both_modules(package):
    name = package("checks_twice", {"lesson01": LESSON.format(name="same", demo=False),
                                    "lesson02": LESSON.format(name="same", demo=False)})
    with pytest.raises(DuplicateExercise, match=rf"'same'.*{name}\.lesson01.*{name}\.lesson02"):
        Catalog(name).find("same")


def test_a_lesson_module_without_exercises_is_an_error(package):
    name = package("checks_bare", {"lesson03": "HELP = 'no EXERCISES here'\n",
                                   "lesson04": "EXERCISES = ['not an exercise']\n"})
    for lesson in ("03", "04"):
        with pytest.raises(TypeError, match=rf"{name}\.lesson{lesson} must declare EXERCISES"):
            Catalog(name).declared(lesson)


def test_hint_by_name_reaches_every_lesson(capsys):
    hint("no_such_exercise")
    out = capsys.readouterr().out
    for exercise in CATALOG.by_name:
        assert exercise in out
