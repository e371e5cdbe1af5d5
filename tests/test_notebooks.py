"""Execute every notebook with papermill, FAST: solutions must pass all their checks; lessons
must fail every check, only for want of code.

The outputs marked ``# NBVAL_CHECK_OUTPUT`` are compared by nbval itself: ``make test`` also runs
``pytest --nbval-lax solutions/`` (``conftest.py`` keeps each notebook's cells on one xdist
worker). The last tests here hold that wiring: nbval must fail a notebook whose marked output
changed, and the Makefile must collect solutions/ with it.
"""

import subprocess
import sys

import nbformat
import pytest

from course.checks import exercises_for
from course.dev.notebooks import execute_notebook
from tests.helpers import LESSONS, ROOT, SOLUTIONS, check_reports, error_outputs

NOTEBOOK_TIMEOUT = 600  # seconds per cell; FAST lessons take well under a minute in all


@pytest.mark.notebook
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_runs_and_passes_its_checks(path):
    notebook, _ = execute_notebook(path, fast=True, timeout=NOTEBOOK_TIMEOUT)
    assert error_outputs(notebook) == []
    reports = [r for r in check_reports(notebook) if not r["demo"]]
    assert [r for r in reports if not r["passed"]] == []
    lesson = notebook.metadata["course"]["lesson"]
    assert {r["exercise"] for r in reports} == {e.name for e in exercises_for(lesson)}


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


def _nbval(notebook_path):
    """``pytest --nbval-lax`` on one notebook, as ``make test`` runs it; (exit code, output)."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                          "--nbval-lax", "--nbval-current-env", str(notebook_path)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    return run.returncode, run.stdout + run.stderr


@pytest.mark.notebook
def test_nbval_compares_the_marked_outputs_and_only_those(tmp_path):
    notebook = nbformat.v4.new_notebook()
    marked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(6 * 7)")
    marked.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    marked.execution_count = 1  # nbval refuses stored outputs of a cell that never ran
    unmarked = nbformat.v4.new_code_cell("print('anything')")
    unmarked.outputs = [nbformat.v4.new_output("stream", name="stdout", text="something else\n")]
    unmarked.execution_count = 2
    notebook.cells = [marked, unmarked]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    good = tmp_path / "good.ipynb"
    nbformat.write(notebook, good)
    code, output = _nbval(good)
    assert code == 0, output
    marked.outputs[0]["text"] = "41\n"  # the stored output no longer matches the code
    bad = tmp_path / "bad.ipynb"
    nbformat.write(notebook, bad)
    code, output = _nbval(bad)
    assert code == 1 and "42" in output and "41" in output, output


def test_make_test_runs_nbval_over_the_solutions():
    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "solutions" in recipe and "--nbval-lax" in recipe and "--dist loadgroup" in recipe
