"""Execute every notebook: solutions must pass all their checks, lessons must fail all of them.

nbval runs separately over solutions/ (``--nbval-lax``; see the Makefile).
"""

import nbformat
import papermill
import pytest
from nbclient import NotebookClient

from course.checks import exercises_for
from tests.helpers import LESSONS, SOLUTIONS, check_reports, error_outputs

NOTEBOOK_TIMEOUT = 600  # seconds per cell; FAST lessons take well under a minute in all


@pytest.mark.notebook
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_runs_and_passes_its_checks(path, tmp_path):
    executed = tmp_path / path.name
    papermill.execute_notebook(str(path), str(executed), parameters={"FAST": True},
                               kernel_name="python3", cwd=str(path.parent),
                               execution_timeout=NOTEBOOK_TIMEOUT, progress_bar=False)
    notebook = nbformat.read(executed, as_version=4)
    assert error_outputs(notebook) == []
    reports = [r for r in check_reports(notebook) if not r["demo"]]
    assert [r for r in reports if not r["passed"]] == []
    lesson = notebook.metadata["course"]["lesson"]
    assert {r["exercise"] for r in reports} == {e.name for e in exercises_for(lesson)}


@pytest.mark.notebook
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_fails_every_check_only_for_want_of_code(path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=NOTEBOOK_TIMEOUT, kernel_name="python3", allow_errors=True,
                   store_widget_state=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    unexpected = [e for e in error_outputs(notebook) if e[1] != "NotImplementedError"]
    assert unexpected == [], "a lesson may only fail where a learner has code to write"
    reports = [r for r in check_reports(notebook) if not r["demo"]]
    lesson = notebook.metadata["course"]["lesson"]
    assert sorted(r["exercise"] for r in reports) == sorted(e.name for e in exercises_for(lesson))
    for report in reports:
        assert not report["passed"] and report["score"] == 0
        assert {c["status"] for c in report["cases"]} == {"not implemented"}, report
