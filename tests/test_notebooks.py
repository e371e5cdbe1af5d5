"""Execute every notebook once: solutions must pass all their checks and reproduce every output
marked ``# NBVAL_CHECK_OUTPUT``; lessons must fail every check, only for want of code.

The marked outputs are compared as ``pytest --nbval-lax`` would (stdout text, trailing spaces
ignored), from the same single run that checks the verdicts.
"""

import nbformat
import pytest

from course.checks import exercises_for
from course.dev.notebooks import execute_notebook
from tests.helpers import LESSONS, SOLUTIONS, check_reports, error_outputs

CHECKED_OUTPUT = "# NBVAL_CHECK_OUTPUT"
NOTEBOOK_TIMEOUT = 600  # seconds per cell; FAST lessons take well under a minute in all


@pytest.mark.notebook
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_runs_and_passes_its_checks(path):
    notebook, _ = execute_notebook(path, parameters={"FAST": True}, timeout=NOTEBOOK_TIMEOUT)
    assert error_outputs(notebook) == []
    reports = [r for r in check_reports(notebook) if not r["demo"]]
    assert [r for r in reports if not r["passed"]] == []
    lesson = notebook.metadata["course"]["lesson"]
    assert {r["exercise"] for r in reports} == {e.name for e in exercises_for(lesson)}
    stored = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    ran = [c for c in notebook.cells if c.cell_type == "code"
           and "injected-parameters" not in c.metadata.get("tags", [])]
    assert len(stored) == len(ran)
    for number, (before, after) in enumerate(zip(stored, ran), start=1):
        if CHECKED_OUTPUT in before.source:
            assert _stdout(after) == _stdout(before), f"code cell {number} printed otherwise"


def _stdout(cell) -> list[str]:
    """The text a cell printed, line by line, without trailing spaces."""
    text = "".join(o.get("text", "") for o in cell.outputs
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    return [line.rstrip() for line in text.rstrip().splitlines()]


@pytest.mark.notebook
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_fails_every_check_only_for_want_of_code(path):
    notebook, _ = execute_notebook(path, fast=True, timeout=NOTEBOOK_TIMEOUT, allow_errors=True)
    unexpected = [e for e in error_outputs(notebook) if e[1] != "NotImplementedError"]
    assert unexpected == [], "a lesson may only fail where a learner has code to write"
    reports = [r for r in check_reports(notebook) if not r["demo"]]
    lesson = notebook.metadata["course"]["lesson"]
    assert sorted(r["exercise"] for r in reports) == sorted(e.name for e in exercises_for(lesson))
    for report in reports:
        assert not report["passed"] and report["score"] == 0
        assert {c["status"] for c in report["cases"]} == {"not implemented"}, report
